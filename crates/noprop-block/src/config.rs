//! The shape of a block: image size and channels, latent size d, number of
//! classes m and the dropout rate.
//!
//! The three valid 3x3 convolutions and two 2x2 poolings map an `H x H`
//! image to `S x S` with `S = floor((floor((H - 2) / 2) - 4) / 2)`
//! (MNIST 28 -> 4, CIFAR 32 -> 5), so `H >= 14` is needed for `S >= 1`.

use candle_core::{bail, Result};
use serde::{Deserialize, Serialize};

/// Dropout rate of the paper's blocks (Fig. 6).
pub const DEFAULT_DROPOUT: f32 = 0.2;

fn default_dropout() -> f32 {
    DEFAULT_DROPOUT
}

/// What a DT or CT/FM block is built for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BlockConfig {
    /// Image channels C (1 for MNIST, 3 for CIFAR).
    pub in_channels: usize,
    /// Image height = width H (28 for MNIST, 32 for CIFAR).
    pub image_size: usize,
    /// Latent (class embedding) dimension d.
    pub latent_dim: usize,
    /// Number of classes m, the number of logits.
    pub num_classes: usize,
    /// Dropout probability in the convolutional branches.
    #[serde(default = "default_dropout")]
    pub dropout: f32,
}

impl BlockConfig {
    /// A block for `in_channels x image_size x image_size` images, latent
    /// dimension `latent_dim`, `num_classes` logits and the paper's dropout.
    pub fn new(
        in_channels: usize,
        image_size: usize,
        latent_dim: usize,
        num_classes: usize,
    ) -> Self {
        Self {
            in_channels,
            image_size,
            latent_dim,
            num_classes,
            dropout: DEFAULT_DROPOUT,
        }
    }

    /// MNIST-family images (1x28x28).
    pub fn for_mnist(latent_dim: usize, num_classes: usize) -> Self {
        Self::new(1, 28, latent_dim, num_classes)
    }

    /// CIFAR-family images (3x32x32).
    pub fn for_cifar(latent_dim: usize, num_classes: usize) -> Self {
        Self::new(3, 32, latent_dim, num_classes)
    }

    /// The same configuration with another dropout rate.
    pub fn with_dropout(self, dropout: f32) -> Self {
        Self { dropout, ..self }
    }

    /// Scalars in one image, C*H*W (the prototype embedding size).
    pub fn image_dim(&self) -> usize {
        self.in_channels * self.image_size * self.image_size
    }

    /// Whether the latent goes through a convolutional branch: when d equals
    /// the image size, z is read as an image (prototype embeddings).
    pub fn conv_latent(&self) -> bool {
        self.latent_dim == self.image_dim()
    }

    /// Sides of the three convolutional layers' outputs (after pooling where
    /// there is pooling): `H1 = (H-2)/2`, `H1-2`, `S = (H1-4)/2`.
    pub fn conv_layer_sides(&self) -> [usize; 3] {
        let h1 = self.image_size.saturating_sub(2) / 2;
        [h1, h1.saturating_sub(2), h1.saturating_sub(4) / 2]
    }

    /// Side S of the last convolutional feature map (see the module doc).
    pub fn conv_output_side(&self) -> usize {
        self.conv_layer_sides()[2]
    }

    /// Width of the flattened convolutional features, 128 * S * S.
    pub fn conv_output_dim(&self) -> usize {
        128 * self.conv_output_side() * self.conv_output_side()
    }

    /// Checks that a block can be built for this configuration.
    pub fn validate(&self) -> Result<()> {
        if self.in_channels == 0 {
            bail!("block config: in_channels must be at least 1");
        }
        if self.image_size < 14 {
            bail!(
                "block config: image_size {} is too small, three valid 3x3 convolutions and two 2x2 poolings need at least 14",
                self.image_size
            );
        }
        if self.latent_dim == 0 {
            bail!("block config: latent_dim must be at least 1");
        }
        if self.num_classes == 0 {
            bail!("block config: num_classes must be at least 1");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("block config: dropout {} must be in [0, 1)", self.dropout);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_sides_match_hand_computation() {
        // MNIST: 28 -conv-> 26 -pool-> 13 -conv-> 11 -conv-> 9 -pool-> 4.
        assert_eq!(BlockConfig::for_mnist(10, 10).conv_output_side(), 4);
        // CIFAR: 32 -> 30 -> 15 -> 13 -> 11 -> 5.
        assert_eq!(BlockConfig::for_cifar(10, 10).conv_output_dim(), 128 * 25);
        assert_eq!(
            BlockConfig::for_mnist(10, 10).conv_layer_sides(),
            [13, 11, 4]
        );
        // Smallest valid: 14 -> 12 -> 6 -> 4 -> 2 -> 1.
        assert_eq!(BlockConfig::new(1, 14, 3, 3).conv_output_side(), 1);
    }

    #[test]
    fn conv_latent_exactly_when_d_is_the_image_size() {
        assert!(BlockConfig::for_mnist(784, 10).conv_latent());
        assert!(BlockConfig::for_cifar(3072, 100).conv_latent());
        assert!(!BlockConfig::for_mnist(20, 10).conv_latent());
    }

    #[test]
    fn validation_names_the_problem() {
        let err = |c: BlockConfig| c.validate().unwrap_err().to_string();
        assert!(err(BlockConfig::new(1, 13, 10, 10)).contains("image_size"));
        assert!(err(BlockConfig::new(0, 28, 10, 10)).contains("in_channels"));
        assert!(err(BlockConfig::for_mnist(0, 10)).contains("latent_dim"));
        assert!(err(BlockConfig::for_mnist(10, 0)).contains("num_classes"));
        assert!(err(BlockConfig::for_mnist(10, 10).with_dropout(1.0)).contains("dropout"));
        BlockConfig::new(1, 14, 1, 1).validate().unwrap();
    }

    #[test]
    fn serde_round_trip_and_default_dropout() {
        let c = BlockConfig::for_cifar(20, 100);
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<BlockConfig>(&s).unwrap(), c);
        let no_dropout = r#"{"in_channels":1,"image_size":28,"latent_dim":10,"num_classes":10}"#;
        let parsed: BlockConfig = serde_json::from_str(no_dropout).unwrap();
        assert_eq!(parsed.dropout, DEFAULT_DROPOUT);
    }
}
