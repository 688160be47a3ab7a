//! End-to-end tests of the report on synthetic run directories, written
//! with the trainer's own types (and the helpers the other report tests
//! use to make them).

use std::path::Path;

use clap::Parser;
use serde_json::{json, Value};

use super::*;
use crate::config::RunConfig;
use crate::eval::{EvalReport, UsedSettings};
use crate::info::{InfoReport, ParameterCounts};
use crate::memory::MemoryUsage;
use crate::metrics::{EpochTotals, MetricsLog};
use crate::overrides::Override;
use crate::registry::Sections;
use crate::summary::{RunStatus, RunSummary, SUMMARY_FILE};
use crate::train::{CONFIG_FILE, LAST_CHECKPOINT};
use noprop_core::ScheduleTable;

const MIB: u64 = 1 << 20;

/// The resolved configuration of `variant` with every default.
pub(crate) fn run_config(variant: &str) -> RunConfig {
    RunConfig::load(
        None,
        &[Override::flag("--variant", &["variant"], variant)],
        &Sections,
    )
    .unwrap()
}

/// A variant's colour in the figures when the variants differ.
fn registered_colour(variant: &str) -> plotters::style::RGBColor {
    let [r, g, b] = crate::registry::find(variant).unwrap().colour();
    plotters::style::RGBColor(r, g, b)
}

/// Writes `config.toml` as `noprop train` does.
pub(crate) fn write_config(dir: &Path, config: &RunConfig) {
    std::fs::write(dir.join(CONFIG_FILE), config.to_toml().unwrap()).unwrap();
}

/// Epoch `n`'s metrics line with test accuracy `acc`: train accuracy
/// `acc - 0.02`, 100 s of training, 5 s of evaluation, loss 2 / n, peak
/// memory (300 + 10 (n - 1)) MiB in training and 400 MiB in evaluation.
pub(crate) fn epoch_line(n: usize, acc: f64) -> EpochMetrics {
    let mut e = EpochMetrics::from_totals(n, 47 * n as u64, &EpochTotals::default());
    e.train_loss = 2.0 / n as f64;
    e.train_terms = [("ce", 0.5), ("denoise", 1.5)]
        .into_iter()
        .map(|(name, v)| (name.to_owned(), v / n as f64))
        .collect();
    e.train_accuracy = Some(acc - 0.02);
    e.test_accuracy = acc;
    e.train_seconds = 100.0;
    e.eval_seconds = 5.0;
    e.learning_rate = Some(1e-3);
    e.memory = MemoryUsage {
        train_peak_rss_bytes: Some((300 + 10 * (n as u64 - 1)) * MIB),
        eval_peak_rss_bytes: Some(400 * MIB),
        baseline_rss_bytes: Some(200 * MIB),
        ..MemoryUsage::default()
    };
    e
}

/// Appends one line per accuracy to `metrics.jsonl`, as the trainer does.
pub(crate) fn write_metrics(dir: &Path, accs: &[f64]) -> Vec<EpochMetrics> {
    let log = MetricsLog::new(dir);
    let lines: Vec<EpochMetrics> = accs
        .iter()
        .enumerate()
        .map(|(i, &acc)| epoch_line(i + 1, acc))
        .collect();
    for line in &lines {
        log.append(line).unwrap();
    }
    lines
}

/// `noprop eval --json` of `dir/last.safetensors`: accuracy `acc`, and
/// with `runs` (several) those runs' accuracies, their sd and as ensemble
/// the best of them; 10,000 images in 25 s (2.5 ms per image).
pub(crate) fn eval_report(dir: &Path, variant: &str, acc: f64, runs: &[f64]) -> EvalReport {
    let runs = if runs.is_empty() {
        vec![acc]
    } else {
        runs.to_vec()
    };
    let n = runs.len() as f64;
    let mean = runs.iter().sum::<f64>() / n;
    let accuracy_std = if runs.len() > 1 {
        (runs.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    EvalReport {
        checkpoint: dir.join(LAST_CHECKPOINT).display().to_string(),
        variant: variant.to_owned(),
        dataset: "mnist".into(),
        split: "test".into(),
        accuracy: acc,
        accuracy_std,
        run_accuracies: runs.clone(),
        ensemble_accuracy: runs.iter().copied().fold(f64::MIN, f64::max),
        correct_per_run: runs.iter().map(|r| (r * 10_000.0).round() as u64).collect(),
        per_class_accuracy: vec![],
        confusion: vec![],
        images: 10_000,
        seconds: 25.0,
        ms_per_image: 2.5,
        images_per_second: 400.0,
        seed: 0,
        settings: UsedSettings {
            steps: None,
            solver: None,
            deterministic: Some(false),
            runs: runs.len(),
            batch_size: 500,
        },
        variant_config: json!({}),
    }
}

/// A completed run's `summary.json`: 2 epochs, 867,724 parameters, peak
/// memory 1,536 MiB in training and 1,600 MiB in evaluation.
pub(crate) fn summary(dir: &Path, variant: &str) -> RunSummary {
    RunSummary {
        status: RunStatus::Completed,
        run_dir: dir.display().to_string(),
        variant: variant.to_owned(),
        dataset: "mnist".into(),
        epochs: 2,
        epochs_planned: 2,
        step: 94,
        parameters: 867_724,
        train_seconds: 200.0,
        train_peak_rss_bytes: Some(1536 * MIB),
        eval_peak_rss_bytes: Some(1600 * MIB),
        baseline_rss_bytes: Some(200 * MIB),
        train_peak_device_bytes: None,
        eval_peak_device_bytes: None,
        train_accuracy: Some(0.83),
        test_accuracy: Some(0.85),
        validation_accuracy: None,
        best: None,
        last_checkpoint: dir.join(LAST_CHECKPOINT).display().to_string(),
        best_checkpoint: None,
    }
}

/// `noprop info --json` of a `variant` model with `total` parameters.
pub(crate) fn info_report(
    variant: &str,
    total: usize,
    schedule: Option<ScheduleTable>,
) -> InfoReport {
    InfoReport {
        variant: variant.to_owned(),
        label: crate::registry::label(variant),
        source: "test".into(),
        parameters: ParameterCounts {
            total,
            buffers: 0,
            groups: Default::default(),
        },
        schedule,
        tensors: Vec::new(),
        checkpoint: None,
        config: run_config(variant),
        variant_config: json!({}),
    }
}

fn write_json(path: &Path, value: &impl serde::Serialize) {
    std::fs::write(path, serde_json::to_string(value).unwrap()).unwrap();
}

/// Writes a run directory like `noprop train` does (config.toml and
/// metrics.jsonl), for `accs.len()` epochs.
fn write_run(root: &Path, variant: &str, accs: &[f64]) -> PathBuf {
    let dir = root.join(variant);
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = run_config(variant);
    config.epochs = accs.len();
    config.data.train_limit = Some(6000);
    write_config(&dir, &config);
    write_metrics(&dir, accs);
    dir
}

/// A schedule as `noprop info --json` writes it: t and alpha_bar columns.
fn schedule(t: &[f64], alpha_bar: &[f64]) -> ScheduleTable {
    ScheduleTable {
        label: "test schedule".into(),
        columns: vec!["t".into(), "alpha_bar".into()],
        rows: t
            .iter()
            .zip(alpha_bar)
            .map(|(&t, &ab)| vec![Some(t), Some(ab)])
            .collect(),
    }
}

fn dt_info() -> InfoReport {
    // A cosine-like table for T = 4: alpha_bar increasing.
    let t = [0.0, 1.0, 2.0, 3.0, 4.0];
    let alpha_bar = [0.05, 0.3, 0.6, 0.9, 0.9999];
    info_report("dt", 9_199_460, Some(schedule(&t, &alpha_bar)))
}

fn ct_info() -> InfoReport {
    let t: Vec<f64> = (0..=50).map(|i| i as f64 / 50.0).collect();
    let alpha_bar: Vec<f64> = t.iter().map(|t| 0.01 + 0.98 * t).collect();
    info_report("ct", 867_724, Some(schedule(&t, &alpha_bar)))
}

/// Decodes a PNG and checks it is a real figure: the expected size, many
/// distinct colours (text, axes, antialiasing), and `colors` each present.
fn check_png(path: &Path, width: u32, colors: &[plotters::style::RGBColor]) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    assert_eq!(
        img.dimensions(),
        (width, plots::style::PANEL_HEIGHT),
        "{}",
        path.display()
    );
    let distinct: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(
        distinct.len() > 20,
        "{}: only {} colours",
        path.display(),
        distinct.len()
    );
    let dark = img.pixels().filter(|p| p.0.iter().all(|c| *c < 80)).count();
    assert!(
        dark > 500,
        "{}: almost no text or axes ({dark} dark pixels)",
        path.display()
    );
    for color in colors {
        let rgb = [color.0, color.1, color.2];
        assert!(
            img.pixels().any(|p| p.0 == rgb),
            "{}: no pixel of colour {rgb:?}",
            path.display()
        );
    }
}

#[test]
fn writes_report_tables_json_and_plots_for_three_runs() {
    let tmp = tempfile::tempdir().unwrap();
    // DT: eval.json of three inference runs, info.json; no summary.json.
    let dt = write_run(tmp.path(), "dt", &[0.95, 0.975]);
    write_json(
        &dt.join("eval.json"),
        &eval_report(&dt, "dt", 0.975, &[0.974, 0.975, 0.976]),
    );
    write_json(&dt.join("info.json"), &dt_info());
    // CT: summary.json, info.json and info-initial.json; no eval.json.
    let ct = write_run(tmp.path(), "ct", &[0.70, 0.85]);
    write_json(&ct.join(SUMMARY_FILE), &summary(&ct, "ct"));
    write_json(&ct.join("info.json"), &ct_info());
    let mut initial = ct_info();
    initial.schedule = Some(schedule(&[0.0, 1.0], &[0.01, 0.99]));
    write_json(&ct.join("info-initial.json"), &initial);
    // FM: eval.json of one run only.
    let fm = write_run(tmp.path(), "fm", &[0.96, 0.98]);
    let mut eval = eval_report(&fm, "fm", 0.9812, &[]);
    eval.ms_per_image = 0.25;
    eval.settings.steps = Some(100);
    eval.settings.solver = Some("euler".into());
    eval.settings.deterministic = None;
    write_json(&fm.join("eval.json"), &eval);

    let out = tmp.path().join("compare");
    let args = CompareArgs {
        runs: vec![dt, ct, fm],
        out: out.clone(),
        json: false,
        note: Some("cargo xtask train-all --quick".into()),
        labels: Vec::new(),
        force: false,
        caveats: vec!["a smoke test".into()],
    };
    run_compare(&args).unwrap();
    // A second report into the same directory needs --force.
    let err = format!("{:#}", run_compare(&args).unwrap_err());
    assert!(
        err.contains("already holds a report") && err.contains("--force"),
        "{err}"
    );
    run_compare(&CompareArgs {
        force: true,
        ..args.clone()
    })
    .unwrap();

    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("Command: `cargo xtask train-all --quick`"),
        "{md}"
    );
    assert!(
        md.contains("**Read with care:**\n\n- a smoke test\n"),
        "{md}"
    );
    // DT has several inference runs: single runs and ensemble apart. No
    // run has a validation split: no best-epoch column.
    assert!(
        md.contains(
            "| variant | test accuracy (single runs: mean ± sd) | test accuracy (ensemble of the runs) \
             | train accuracy | training time | inference (ms/image) | peak memory, training (MiB) \
             | parameters | test acc. % per M params | epochs |\n"
        ),
        "{md}"
    );
    assert!(
        !md.contains("best test") && !md.contains("best validation"),
        "{md}"
    );
    // DT: eval.json's mean 97.50 % and sd 0.1 points of 3 runs, their
    // ensemble 97.60 %; 95.50 % train (last epoch), 2 x 100 s, 2.5 ms per
    // image; peak memory from the metrics lines (no summary.json): 310 MiB;
    // 97.5 / 9.19946 = 10.6 % per M parameters.
    assert!(
        md.contains(
            "| NoProp-DT | 97.50% ± 0.10 (3 runs) | 97.60% | 95.50% | 200 s (3.3 min) | 2.500 | 310 | 9,199,460 | 10.6 | 2 |\n"
        ),
        "{md}"
    );
    // CT: the last epoch (no eval.json), summary.json's memory and
    // parameters; 85 / 0.867724 = 98.0 % per M parameters.
    assert!(
        md.contains(
            "| NoProp-CT | 85.00% | n/a | 83.00% | 200 s (3.3 min) | n/a | 1,536 | 867,724 | 98.0 | 2 |\n"
        ),
        "{md}"
    );
    // FM: eval.json, one run; no info or summary: no parameter count.
    assert!(
        md.contains(
            "| NoProp-FM | 98.12% | n/a | 96.00% | 200 s (3.3 min) | 0.250 | 310 | n/a | n/a | 2 |\n"
        ),
        "{md}"
    );
    assert!(
        md.contains(
            "- NoProp-FM: test accuracy from `noprop eval` of `last.safetensors` (100 euler steps, 1 run, batches of 500)."
        ),
        "{md}"
    );
    assert!(
        md.contains(
            "- NoProp-CT: test accuracy from the trainer's evaluation after the last epoch"
        ),
        "{md}"
    );
    assert!(md.contains("mean ± standard deviation"), "{md}");
    assert!(
        md.contains("- NoProp-DT (`dt`): dataset mnist, 6,000 training images, full test set, 2 epochs, batch 128, one-hot embedding, seed 0, not finished (no summary.json)"),
        "{md}"
    );
    assert!(md.contains("seed 0, completed\n"), "{md}");
    assert!(
        md.contains(
            "| NoProp-CT | 1 | 47 | 2.000 | ce 0.5000, denoise 1.500 | 68.00% | 70.00% | 100.0 | 5.0 | 1.00e-3 |"
        ),
        "{md}"
    );
    assert!(
        md.contains("![noise schedules](noise_schedules.png)"),
        "{md}"
    );

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let runs = &report["runs"];
    assert_eq!(runs.as_array().unwrap().len(), 3);
    assert_eq!(runs[0]["parameters"], 9_199_460);
    assert_eq!(runs[0]["inference_runs"], 3);
    assert_eq!(runs[0]["ensemble_accuracy"], 0.976);
    assert_eq!(runs[0]["test_accuracy_source"], "eval.json");
    assert_eq!(runs[1]["test_accuracy_source"], "last epoch");
    assert_eq!(runs[1]["train_peak_rss_mib"], 1536.0);
    assert_eq!(runs[1]["eval_peak_rss_bytes"], 1600 * MIB);
    assert_eq!(runs[1]["status"], "completed");
    assert_eq!(runs[2]["test_accuracy"], 0.9812);
    assert!(runs[2]["ensemble_accuracy"].is_null());
    assert_eq!(report["schedules"].as_array().unwrap().len(), 3);
    assert_eq!(report["schedules"][0]["label"], "NoProp-DT (T=4)");
    assert_eq!(report["schedules"][1]["label"], "NoProp-CT initial");
    assert_eq!(report["schedules"][2]["label"], "NoProp-CT");
    // The trainer's own metrics lines.
    let ct_epochs = &report["epochs"][1]["epochs"];
    assert_eq!(ct_epochs.as_array().unwrap().len(), 2);
    assert_eq!(ct_epochs[1]["train_terms"]["ce"], 0.25);
    assert_eq!(report["plots"].as_array().unwrap().len(), 8);

    let (dt_c, ct_c, fm_c) = (
        registered_colour("dt"),
        registered_colour("ct"),
        registered_colour("fm"),
    );
    let two = 2 * plots::style::PANEL_WIDTH;
    let one = plots::style::PANEL_WIDTH;
    check_png(&out.join("learning_curves.png"), two, &[dt_c, ct_c, fm_c]);
    // Every file was written through a temporary one, none of which is left.
    let leftovers: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    check_png(&out.join("final_accuracy.png"), two, &[dt_c, ct_c, fm_c]);
    check_png(&out.join("training_time.png"), two, &[dt_c, ct_c, fm_c]);
    // FM has no parameter count: only DT and CT bars.
    check_png(&out.join("model_size.png"), one, &[dt_c, ct_c]);
    check_png(&out.join("accuracy_per_param.png"), one, &[dt_c, ct_c]);
    check_png(&out.join("speed_vs_accuracy.png"), two, &[dt_c, ct_c, fm_c]);
    check_png(&out.join("noise_schedules.png"), two, &[dt_c, ct_c]);
}

#[test]
fn a_validation_split_gives_the_best_validation_epoch_column() {
    let tmp = tempfile::tempdir().unwrap();
    let dt = write_run(tmp.path(), "dt", &[0.95, 0.97, 0.96]);
    let mut config = run_config("dt");
    config.epochs = 3;
    config.data.validation = 1000;
    write_config(&dt, &config);
    let log = MetricsLog::new(&dt);
    std::fs::remove_file(log.path()).unwrap();
    for (n, (test, validation)) in [(0.95, 0.90), (0.97, 0.93), (0.96, 0.92)]
        .into_iter()
        .enumerate()
    {
        let mut line = epoch_line(n + 1, test);
        line.validation_accuracy = Some(validation);
        log.append(&line).unwrap();
    }
    let fm = write_run(tmp.path(), "fm", &[0.9]);
    let report = write_report(
        &[RunData::load(&dt).unwrap(), RunData::load(&fm).unwrap()],
        &tmp.path().join("out"),
        None,
        &[],
    )
    .unwrap();
    let table = markdown::summary_table(&report.runs);
    assert!(
        table.starts_with(
            "| variant | test accuracy | train accuracy | training time | inference (ms/image) \
             | peak memory, training (MiB) | parameters | test acc. % per M params | epochs \
             | best validation (epoch) |\n"
        ),
        "{table}"
    );
    // The best validation epoch (2), not the best test epoch; FM has none.
    assert!(table.contains("| 3 | 93.00% (2) |\n"), "{table}");
    assert!(table.contains("| 1 | n/a |\n"), "{table}");
    let md = std::fs::read_to_string(tmp.path().join("out/report.md")).unwrap();
    assert!(md.contains("1,000 of them held out for validation"), "{md}");
    assert!(
        md.contains("| train acc. | validation acc. | test acc. |"),
        "{md}"
    );
    assert!(
        md.contains("| 2 | 94 | 1.000 | ce 0.2500, denoise 0.7500 | 95.00% | 93.00% | 97.00% |"),
        "{md}"
    );
}

#[test]
fn figures_without_data_are_still_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fm");
    std::fs::create_dir(&dir).unwrap();
    write_config(&dir, &run_config("fm"));
    std::fs::write(dir.join("metrics.jsonl"), "").unwrap();
    let out = tmp.path().join("out");
    let report = write_report(&[RunData::load(&dir).unwrap()], &out, None, &[]).unwrap();
    assert_eq!(report.plots.len(), 8);
    for plot in &report.plots {
        let img = image::open(out.join(plot)).unwrap().to_rgb8();
        // The "no data" title is drawn: some dark pixels.
        assert!(img.pixels().any(|p| p.0.iter().all(|c| *c < 80)), "{plot}");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("| NoProp-FM | n/a | n/a | n/a | n/a | n/a | n/a | n/a | 0 of 1 |\n"),
        "{md}"
    );
}

#[test]
fn bad_run_directories_are_errors_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let args = CompareArgs {
        runs: vec![tmp.path().join("missing")],
        out: tmp.path().join("out"),
        json: true,
        note: None,
        labels: Vec::new(),
        force: false,
        caveats: Vec::new(),
    };
    let err = format!("{:#}", run_compare(&args).unwrap_err());
    assert!(
        err.contains("missing") && err.contains("does not exist"),
        "{err}"
    );
    assert!(!tmp.path().join("out").exists());
}

#[derive(Parser)]
struct Wrapper {
    #[command(flatten)]
    compare: CompareArgs,
}

#[test]
fn parses_the_command_line() {
    let w = Wrapper::try_parse_from(["x", "--runs", "a", "b", "--out", "o", "--json"]).unwrap();
    assert_eq!(w.compare.runs, vec![PathBuf::from("a"), PathBuf::from("b")]);
    assert_eq!(w.compare.out, PathBuf::from("o"));
    assert!(w.compare.json);
    assert!(Wrapper::try_parse_from(["x", "--out", "o"]).is_err());
    let w = Wrapper::try_parse_from(["x", "--runs", "a"]).unwrap();
    assert_eq!(w.compare.out, PathBuf::from("runs/compare"));
}

#[test]
fn formats_utc_dates() {
    // Known instants: the epoch, a leap day, and 1.7e9 s.
    assert_eq!(format_utc(0), "1970-01-01 00:00:00");
    assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00");
    assert_eq!(format_utc(1_700_000_000), "2023-11-14 22:13:20");
}

#[test]
fn a_sweep_names_and_colours_each_run_and_lists_what_differs() {
    let tmp = tempfile::tempdir().unwrap();
    let base = write_run(tmp.path(), "fm", &[0.9, 0.95]);
    let other = tmp.path().join("fm-lr3");
    std::fs::create_dir_all(&other).unwrap();
    let mut config = RunConfig::load(
        None,
        &[
            Override::flag("--variant", &["variant"], "fm"),
            Override::parse_set("fm.lr=0.003").unwrap(),
            Override::parse_set("data.test_limit=2000").unwrap(),
        ],
        &Sections,
    )
    .unwrap();
    config.epochs = 2;
    config.data.train_limit = Some(6000);
    write_config(&other, &config);
    write_metrics(&other, &[0.8, 0.85]);
    let runs = [
        RunData::load(&base).unwrap(),
        RunData::load(&other).unwrap(),
    ];

    let report = CompareReport::from_runs(&runs, None, &[]).unwrap();
    let labels: Vec<&str> = report.runs.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(labels, ["NoProp-FM (fm)", "NoProp-FM (fm-lr3)"]);
    assert_ne!(report.runs[0].colour, report.runs[1].colour);
    let keys: Vec<&str> = report
        .differing_keys
        .iter()
        .map(|k| k.key.as_str())
        .collect();
    assert_eq!(keys, ["data.test_limit", "fm.lr"]);
    assert_eq!(
        report.differing_keys[0].values,
        [None, Some(serde_json::json!(2000))]
    );
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert!(
        report.warnings[0].starts_with("the test sets differ: NoProp-FM (fm): all test images; "),
        "{:?}",
        report.warnings
    );
    let md = markdown::render(&report);
    assert!(md.contains("| run | `data.test_limit` | `fm.lr` |"), "{md}");
    // Each run's learning curve in its own colour.
    let out = tmp.path().join("out");
    write_report(&runs, &out, None, &[]).unwrap();
    let [a, b] = [0, 1].map(|i| {
        let [r, g, b] = plots::style::RUN_PALETTE[i];
        plotters::style::RGBColor(r, g, b)
    });
    check_png(
        &out.join("learning_curves.png"),
        2 * plots::style::PANEL_WIDTH,
        &[a, b],
    );
    assert!(md.contains("| NoProp-FM (fm-lr3) | 2000 | 0.003 |"), "{md}");

    // Labels given: one per run.
    let named = CompareReport::from_runs(&runs, None, &["base".into(), "lr 3e-3".into()]).unwrap();
    assert_eq!(named.runs[1].label, "lr 3e-3");
    let err = CompareReport::from_runs(&runs, None, &["base".into()]).unwrap_err();
    assert!(err
        .to_string()
        .contains("--label was given 1 times for 2 runs"));

    // Two variants: the variants' names and colours, nothing differs but
    // the variant's keys.
    let dt = write_run(tmp.path(), "dt", &[0.9]);
    let mixed = [RunData::load(&base).unwrap(), RunData::load(&dt).unwrap()];
    let report = CompareReport::from_runs(&mixed, None, &[]).unwrap();
    assert_eq!(report.runs[1].label, "NoProp-DT");
    assert_eq!(
        report.runs[1].colour,
        crate::registry::find("dt").unwrap().colour()
    );
}
