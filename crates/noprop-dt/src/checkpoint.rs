//! [`NoPropDt`] to and from the checkpoint files `noprop train` writes
//! (the format of `noprop-checkpoint`): [`NoPropDt::from_checkpoint`] rebuilds
//! the model from the file's metadata and loads its weights;
//! [`NoPropDt::save`] writes a weights checkpoint that `noprop eval`,
//! `noprop predict` and `noprop export` read.

use std::path::Path;

use candle_core::Device;
use noprop_checkpoint::ModelCard;

use crate::model::NoPropDt;

impl NoPropDt {
    /// Loads the NoProp-DT model of the checkpoint at `path` (a
    /// `best.safetensors` or `last.safetensors` of `noprop train`, an
    /// exported file, or one written by [`NoPropDt::save`]) onto `device`. Its
    /// inputs are normalised as the file's [`ModelCard`] says
    /// ([`ModelCard::read`], [`ModelCard::normalize`]). A file of another
    /// variant, a damaged file, or weights that do not fit are errors
    /// naming the file.
    pub fn from_checkpoint(path: impl AsRef<Path>, device: &Device) -> anyhow::Result<Self> {
        noprop_checkpoint::load_variant(path, device)
    }

    /// Saves the model's weights to `path` (atomically: a failure leaves
    /// any previous file intact), with `card` saying what it was trained on
    /// and how its inputs are normalised.
    pub fn save(&self, path: impl AsRef<Path>, card: &ModelCard) -> anyhow::Result<()> {
        noprop_checkpoint::save_variant(self, path, card)
    }
}

#[cfg(test)]
mod tests {
    use noprop_checkpoint::testing::{self, Files};

    use super::*;

    const FILES: Files<NoPropDt> = Files {
        save: |model, path, card| model.save(path, card),
        load: |path, device| NoPropDt::from_checkpoint(path, device),
    };

    /// Saved and loaded back: the same variables, bit for bit, and the
    /// same predictions from the same generator.
    #[test]
    fn a_saved_model_loads_back_exactly() {
        testing::a_saved_model_loads_back_exactly(FILES);
    }

    #[test]
    fn a_card_that_does_not_fit_the_model_is_not_saved() {
        testing::a_card_that_does_not_fit_the_model_is_not_saved(FILES);
    }
}
