//! The one place that knows the concrete variant crates (noprop-dt,
//! noprop-ct, noprop-fm): parsing and validating their configuration
//! sections, building a model, the flags that map onto their keys, and the
//! schedule tables `noprop info` prints. Everything else in the trainer
//! works through [`noprop_core::Variant`].
//!
//! Every variant's configuration has `embedding` (one-hot, dimN, prototype)
//! and `lr` keys, which `--embedding` and `--lr` set.

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use noprop_core::variant::ModelSpec;
use noprop_core::{CosineSchedule, EmbeddingKind, LearnedSchedule, Variant, VariantKind};
use noprop_ct::{CtConfig, NoPropCt};
use noprop_dt::{DtConfig, NoPropDt};
use noprop_fm::{FmConfig, NoPropFm};
use serde::de::DeserializeOwned;
use serde::Serialize;
use toml::{Table, Value};

/// Class embedding choices of `--embedding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EmbeddingChoice {
    /// W = I (d = number of classes), fixed.
    OneHot,
    /// Learned, d = 20, orthogonal initialisation.
    Dim20,
    /// Learned, d = image size, initialised with class prototypes.
    Prototype,
}

impl From<EmbeddingChoice> for EmbeddingKind {
    fn from(c: EmbeddingChoice) -> Self {
        match c {
            EmbeddingChoice::OneHot => EmbeddingKind::OneHot,
            EmbeddingChoice::Dim20 => EmbeddingKind::Learned { dim: 20 },
            EmbeddingChoice::Prototype => EmbeddingKind::Prototype,
        }
    }
}

/// A table of numbers with named columns (`noprop info`); `None` where a
/// quantity is undefined (the DT step coefficients at t = 0).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleTable {
    /// What the table shows, e.g. "DT cosine schedule (T = 10)".
    pub label: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<f64>>>,
}

/// Parses `section` (absent: all defaults) as a configuration `C`.
fn parse<C: DeserializeOwned + Default>(section: Option<&Table>) -> Result<C> {
    match section {
        None => Ok(C::default()),
        Some(table) => Ok(Value::Table(table.clone()).try_into()?),
    }
}

/// A configuration as a TOML table, every field present.
fn to_table<C: Serialize>(config: &C) -> Result<Table> {
    match Value::try_from(config)? {
        Value::Table(t) => Ok(t),
        _ => bail!("a variant configuration must serialise to a table"),
    }
}

/// Parses `section` (absent: defaults) as `kind`'s configuration, validates
/// it, and returns it with every default filled in.
pub fn resolve_section(kind: VariantKind, section: Option<&Table>) -> Result<Table> {
    match kind {
        VariantKind::Dt => {
            let config: DtConfig = parse(section)?;
            config.validate()?;
            to_table(&config)
        }
        VariantKind::Ct => {
            let config: CtConfig = parse(section)?;
            config.validate()?;
            to_table(&config)
        }
        VariantKind::Fm => {
            let config: FmConfig = parse(section)?;
            config.validate()?;
            to_table(&config)
        }
    }
}

/// Builds a fresh `kind` model from its resolved section.
pub fn build(
    kind: VariantKind,
    section: &Table,
    spec: ModelSpec,
    prototype_source: Option<(&Tensor, &Tensor)>,
    seed: u64,
    device: &Device,
) -> Result<Box<dyn Variant>> {
    match kind {
        VariantKind::Dt => {
            let config: DtConfig = parse(Some(section))?;
            let model = NoPropDt::new(config, spec, prototype_source, seed, device)
                .context("cannot build the NoProp-DT model")?;
            Ok(Box::new(model))
        }
        VariantKind::Ct => {
            let config: CtConfig = parse(Some(section))?;
            let model = NoPropCt::new(config, spec, prototype_source, seed, device)
                .context("cannot build the NoProp-CT model")?;
            Ok(Box::new(model))
        }
        VariantKind::Fm => {
            let config: FmConfig = parse(Some(section))?;
            let model = NoPropFm::new(config, spec, prototype_source, seed, device)
                .context("cannot build the NoProp-FM model")?;
            Ok(Box::new(model))
        }
    }
}

/// Whether the section asks for prototype embeddings (which need the
/// training images at construction).
pub fn uses_prototypes(kind: VariantKind, section: &Table) -> Result<bool> {
    let embedding = match kind {
        VariantKind::Dt => parse::<DtConfig>(Some(section))?.embedding,
        VariantKind::Ct => parse::<CtConfig>(Some(section))?.embedding,
        VariantKind::Fm => parse::<FmConfig>(Some(section))?.embedding,
    };
    Ok(embedding == EmbeddingKind::Prototype)
}

/// The configuration key and value `--embedding` sets.
pub fn embedding_override(
    kind: VariantKind,
    choice: EmbeddingChoice,
) -> Result<(Vec<String>, Value)> {
    let value = EmbeddingKind::from(choice).to_string();
    Ok((
        vec![kind.as_str().into(), "embedding".into()],
        Value::String(value),
    ))
}

/// The configuration key `--lr` sets.
pub fn lr_key(kind: VariantKind) -> Result<Vec<String>> {
    Ok(vec![kind.as_str().into(), "lr".into()])
}

/// The variant's noise schedule as a table (DT: the cosine schedule; CT:
/// the learned schedule of `model`, on `grid` points of [0, 1]); `None` for
/// FM, which has none.
pub fn schedule_table(
    kind: VariantKind,
    section: &Table,
    model: &dyn Variant,
    grid: usize,
) -> Result<Option<ScheduleTable>> {
    match kind {
        VariantKind::Ct => {
            let config: CtConfig = parse(Some(section))?;
            learned_schedule_table(&config, model, grid).map(Some)
        }
        VariantKind::Dt => {
            let config: DtConfig = parse(Some(section))?;
            cosine_schedule_table(&config).map(Some)
        }
        VariantKind::Fm => Ok(None),
    }
}

/// DT's cosine schedule: for t = 0..=T, alpha_bar, SNR, the SNR delta of
/// block t, its loss weight (T/2) eta delta, and the Eq. 3 coefficients.
fn cosine_schedule_table(config: &DtConfig) -> Result<ScheduleTable> {
    let schedule = CosineSchedule::from_config(&config.schedule_config())?;
    let t_max = config.num_blocks as f64;
    let rows = schedule
        .table()
        .iter()
        .map(|r| {
            let weight = r.snr_delta.map(|d| t_max / 2.0 * config.eta * d);
            vec![
                Some(r.t as f64),
                Some(r.alpha_bar),
                Some(r.snr),
                r.snr_delta,
                weight,
                r.a,
                r.b,
                r.c,
            ]
        })
        .collect();
    Ok(ScheduleTable {
        label: format!(
            "DT cosine schedule (T = {}, alpha_bar_max = {}, eta = {})",
            config.num_blocks, config.alpha_bar_max, config.eta
        ),
        columns: [
            "t",
            "alpha_bar",
            "snr",
            "snr_delta",
            "loss_weight",
            "a_t",
            "b_t",
            "c_t",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    })
}

/// CT's learned schedule on `grid` evenly spaced t in [0, 1], with the
/// model's current values: the schedule is rebuilt over the model's own
/// variables (`schedule.*`), which the store hands back rather than creating.
fn learned_schedule_table(
    config: &CtConfig,
    model: &dyn Variant,
    grid: usize,
) -> Result<ScheduleTable> {
    let store = model.params();
    let device = store
        .get("schedule.gamma_0")
        .context("the CT model has no `schedule.gamma_0` variable")?
        .device()
        .clone();
    let before = store.names().len();
    let vb = store.var_builder(candle_core::DType::F32, &device);
    let schedule = LearnedSchedule::new(&config.schedule, vb.pp("schedule"))?;
    if store.names().len() != before {
        bail!("the CT model's schedule variables do not match its configuration");
    }
    let n = grid.max(2);
    let t: Vec<f32> = (0..n).map(|i| i as f32 / (n - 1) as f32).collect();
    let values = schedule.evaluate(&Tensor::from_vec(t.clone(), n, &device)?)?;
    let column = |x: &Tensor| -> Result<Vec<f32>> {
        Ok(x.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?)
    };
    let (gamma, alpha_bar, snr, snr_prime) = (
        column(&values.gamma)?,
        column(&values.alpha_bar)?,
        column(&values.snr)?,
        column(&values.snr_prime)?,
    );
    let rows = (0..n)
        .map(|i| {
            [t[i], gamma[i], alpha_bar[i], snr[i], snr_prime[i]]
                .iter()
                .map(|&x| Some(f64::from(x)))
                .collect()
        })
        .collect();
    Ok(ScheduleTable {
        label: format!("CT learned schedule on {n} points of t in [0, 1]"),
        columns: ["t", "gamma", "alpha_bar", "snr", "snr_prime"]
            .map(String::from)
            .to_vec(),
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_resolve_with_defaults_and_refuse_bad_values() {
        let resolved = resolve_section(VariantKind::Fm, None).unwrap();
        assert_eq!(resolved["embedding"], Value::String("one-hot".into()));
        assert_eq!(resolved["lr"], Value::Float(1e-3));
        let given: Table = "embedding = \"dim20\"\nlr = 0.01\n".parse().unwrap();
        let resolved = resolve_section(VariantKind::Fm, Some(&given)).unwrap();
        assert_eq!(resolved["embedding"], Value::String("dim20".into()));
        assert!(uses_prototypes(VariantKind::Fm, &resolved).is_ok_and(|p| !p));
        for (text, expected) in [
            ("bogus = 1\n", "bogus"),
            ("lr = -1.0\n", "lr"),
            ("embedding = \"dim0\"\n", "dim0"),
        ] {
            let table: Table = text.parse().unwrap();
            let err = format!(
                "{:#}",
                resolve_section(VariantKind::Fm, Some(&table)).unwrap_err()
            );
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn flags_map_onto_the_variant_section() {
        let (path, value) = embedding_override(VariantKind::Fm, EmbeddingChoice::Dim20).unwrap();
        assert_eq!(path, ["fm", "embedding"]);
        assert_eq!(value, Value::String("dim20".into()));
        let mut table = Table::new();
        crate::overrides::Override {
            path,
            value,
            origin: "--embedding".into(),
        }
        .apply(&mut table)
        .unwrap();
        let resolved =
            resolve_section(VariantKind::Fm, table.get("fm").and_then(Value::as_table)).unwrap();
        assert_eq!(resolved["embedding"], Value::String("dim20".into()));
        assert_eq!(lr_key(VariantKind::Fm).unwrap(), ["fm", "lr"]);
    }

    #[test]
    fn the_ct_schedule_table_starts_at_the_configured_endpoints() {
        // Small schedule network and MNIST shapes; the initial endpoints are
        // gamma = -+ln 99, i.e. alpha_bar(0) = 0.01 and alpha_bar(1) = 0.99.
        let given: Table = "[schedule]\nhidden = 8\n".parse().unwrap();
        let section = resolve_section(VariantKind::Ct, Some(&given)).unwrap();
        let model = build(
            VariantKind::Ct,
            &section,
            ModelSpec::mnist(),
            None,
            0,
            &Device::Cpu,
        )
        .unwrap();
        let table = schedule_table(VariantKind::Ct, &section, model.as_ref(), 5)
            .unwrap()
            .unwrap();
        assert_eq!(table.columns[2], "alpha_bar");
        assert_eq!(table.rows.len(), 5);
        let ab: Vec<f64> = table.rows.iter().map(|r| r[2].unwrap()).collect();
        assert!(
            (ab[0] - 0.01).abs() < 1e-5 && (ab[4] - 0.99).abs() < 1e-5,
            "{ab:?}"
        );
        assert!(ab.windows(2).all(|w| w[1] > w[0]), "{ab:?}");
        // SNR = alpha_bar / (1 - alpha_bar) in every row.
        for row in &table.rows {
            let (a, snr) = (row[2].unwrap(), row[3].unwrap());
            assert!((snr - a / (1.0 - a)).abs() < 1e-3 * snr.max(1.0), "{row:?}");
        }
        assert!(
            schedule_table(VariantKind::Fm, &Table::new(), model.as_ref(), 5)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_dt_schedule_table_matches_the_core_schedule() {
        let given: Table = "num_blocks = 4\neta = 0.5\n".parse().unwrap();
        let section = resolve_section(VariantKind::Dt, Some(&given)).unwrap();
        let config: DtConfig = parse(Some(&section)).unwrap();
        let table = cosine_schedule_table(&config).unwrap();
        assert_eq!(table.rows.len(), 5);
        // Independently: alpha_bar_T is the clean-end clip, SNR = ab / (1 - ab),
        // the loss weight is (T/2) eta (SNR(t) - SNR(t-1)), undefined at t = 0.
        assert!((table.rows[4][1].unwrap() - 0.9999).abs() < 1e-12);
        for t in 1..=4 {
            let (prev, row) = (&table.rows[t - 1], &table.rows[t]);
            let ab = row[1].unwrap();
            assert!((row[2].unwrap() - ab / (1.0 - ab)).abs() < 1e-9 * row[2].unwrap());
            let delta = row[2].unwrap() - prev[2].unwrap();
            assert!(delta > 0.0);
            assert!((row[3].unwrap() - delta).abs() < 1e-9 * delta);
            assert!((row[4].unwrap() - 2.0 * 0.5 * delta).abs() < 1e-9 * row[4].unwrap());
        }
        assert_eq!(table.rows[0][3], None);
        assert_eq!(table.rows[0][5], None);
    }
}
