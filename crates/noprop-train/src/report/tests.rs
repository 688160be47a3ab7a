//! End-to-end tests of the report on synthetic run directories.

use std::path::Path;

use clap::Parser;
use serde_json::{json, Value};

use super::*;
use crate::report::plots::style::variant_color;

/// Writes a run directory like `noprop train` + xtask would.
fn write_run(root: &Path, variant: &str, accs: &[f64], info: Option<Value>) -> PathBuf {
    let dir = root.join(variant);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "variant = \"{variant}\"\nseed = 0\nepochs = {}\nbatch_size = 128\n\n[data]\ndataset = \"mnist\"\ntrain_limit = 6000\n\n[{variant}]\nembedding = \"one-hot\"\n",
            accs.len()
        ),
    )
    .unwrap();
    let lines: String = accs
        .iter()
        .enumerate()
        .map(|(i, acc)| {
            json!({"epoch": i + 1, "step": 47 * (i + 1), "train_loss": 2.0 / (i + 1) as f64,
                "loss_terms": {"ce": 0.5 / (i + 1) as f64, "denoise": 1.5 / (i + 1) as f64},
                "train_accuracy": acc - 0.02, "test_accuracy": acc,
                "epoch_seconds": 100.0, "eval_seconds": 5.0, "lr": 1e-3})
            .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(dir.join("metrics.jsonl"), lines).unwrap();
    if let Some(info) = info {
        std::fs::write(dir.join("info.json"), info.to_string()).unwrap();
    }
    dir
}

/// A schedule as `noprop info --json` writes it: t and alpha_bar columns.
fn schedule(t: &[f64], alpha_bar: &[f64]) -> Value {
    let table = noprop_core::ScheduleTable {
        label: "test schedule".into(),
        columns: vec!["t".into(), "alpha_bar".into()],
        rows: t
            .iter()
            .zip(alpha_bar)
            .map(|(&t, &ab)| vec![Some(t), Some(ab)])
            .collect(),
    };
    serde_json::to_value(table).unwrap()
}

fn dt_info() -> Value {
    // A cosine-like table for T = 4: alpha_bar increasing.
    let t = [0.0, 1.0, 2.0, 3.0, 4.0];
    let alpha_bar = [0.05, 0.3, 0.6, 0.9, 0.9999];
    json!({"variant": "dt", "parameters": {"total": 9_199_460}, "schedule": schedule(&t, &alpha_bar)})
}

fn ct_info() -> Value {
    let t: Vec<f64> = (0..=50).map(|i| i as f64 / 50.0).collect();
    let alpha_bar: Vec<f64> = t.iter().map(|t| 0.01 + 0.98 * t).collect();
    json!({"variant": "ct", "parameters": {"total": 867_724},
        "schedule": schedule(&t, &alpha_bar)})
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
    let dt = write_run(tmp.path(), "dt", &[0.95, 0.975], Some(dt_info()));
    let ct = write_run(tmp.path(), "ct", &[0.70, 0.85], Some(ct_info()));
    let mut initial = ct_info();
    initial["schedule"] = schedule(&[0.0, 1.0], &[0.01, 0.99]);
    std::fs::write(ct.join("info-initial.json"), initial.to_string()).unwrap();
    let fm = write_run(tmp.path(), "fm", &[0.96, 0.98], None);
    std::fs::write(
        fm.join("eval.json"),
        json!({"accuracy": 0.9812, "seconds": 2.5, "images": 10000, "steps": 100, "solver": "euler"})
            .to_string(),
    )
    .unwrap();
    let out = tmp.path().join("compare");
    let args = CompareArgs {
        runs: vec![dt, ct, fm],
        out: out.clone(),
        json: false,
        note: Some("cargo xtask train-all --quick".into()),
    };
    run_compare(&args).unwrap();

    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("Command: `cargo xtask train-all --quick`"),
        "{md}"
    );
    // DT: last epoch 97.50 % test, 95.50 % train, 2 x 100 s, eval 5 s / 10,000
    // images = 0.5 ms, 97.5 / 9.19946 = 10.6 % per M parameters, best epoch 2.
    assert!(
        md.contains(
            "| NoProp-DT | 97.50% | 95.50% | 200 s (3.3 min) | 0.500 | 9,199,460 | 10.6 | 2 | 97.50% (2) |"
        ),
        "{md}"
    );
    // CT: 85 / 0.867724 = 98.0 % per M parameters.
    assert!(md.contains("| NoProp-CT | 85.00% | 83.00% | 200 s (3.3 min) | 0.500 | 867,724 | 98.0 | 2 | 85.00% (2) |"), "{md}");
    // FM: from eval.json, 2.5 s / 10,000 images = 0.25 ms; no info -> n/a.
    assert!(md.contains("| NoProp-FM | 98.12% | 96.00% | 200 s (3.3 min) | 0.250 | n/a | n/a | 2 | 98.00% (2) |"), "{md}");
    assert!(md.contains("NoProp-FM: test accuracy from full evaluation of the final checkpoint (`noprop eval`) (100 steps, euler)."), "{md}");
    assert!(md.contains("| NoProp-CT | 1 | 47 | 2.000 | ce 0.5000, denoise 1.500 | 68.00% | 70.00% | 100.0 | 5.0 | 1.00e-3 |"), "{md}");
    assert!(
        md.contains("![noise schedules](noise_schedules.png)"),
        "{md}"
    );

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["runs"].as_array().unwrap().len(), 3);
    assert_eq!(report["runs"][0]["parameters"], 9_199_460);
    assert_eq!(report["runs"][2]["test_accuracy"], 0.9812);
    assert_eq!(report["schedules"].as_array().unwrap().len(), 3);
    assert_eq!(report["schedules"][0]["label"], "NoProp-DT (T=4)");
    assert_eq!(report["schedules"][1]["label"], "NoProp-CT initial");
    assert_eq!(report["schedules"][2]["label"], "NoProp-CT");
    assert_eq!(report["epochs"][1]["epochs"].as_array().unwrap().len(), 2);
    assert_eq!(report["plots"].as_array().unwrap().len(), 7);

    let (dt_c, ct_c, fm_c) = (
        variant_color("dt", 0),
        variant_color("ct", 0),
        variant_color("fm", 0),
    );
    let two = 2 * plots::style::PANEL_WIDTH;
    let one = plots::style::PANEL_WIDTH;
    check_png(&out.join("learning_curves.png"), two, &[dt_c, ct_c, fm_c]);
    check_png(&out.join("final_accuracy.png"), two, &[dt_c, ct_c, fm_c]);
    check_png(&out.join("training_time.png"), two, &[dt_c, ct_c, fm_c]);
    // FM has no parameter count: only DT and CT bars.
    check_png(&out.join("model_size.png"), one, &[dt_c, ct_c]);
    check_png(&out.join("accuracy_per_param.png"), one, &[dt_c, ct_c]);
    check_png(&out.join("speed_vs_accuracy.png"), two, &[dt_c, ct_c, fm_c]);
    check_png(&out.join("noise_schedules.png"), two, &[dt_c, ct_c]);
}

#[test]
fn figures_without_data_are_still_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fm");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("config.toml"), "variant = \"fm\"\n").unwrap();
    std::fs::write(dir.join("metrics.jsonl"), "").unwrap();
    let out = tmp.path().join("out");
    let report = write_report(&[RunData::load(&dir).unwrap()], &out, None).unwrap();
    assert_eq!(report.plots.len(), 7);
    for plot in &report.plots {
        let img = image::open(out.join(plot)).unwrap().to_rgb8();
        // The "no data" title is drawn: some dark pixels.
        assert!(img.pixels().any(|p| p.0.iter().all(|c| *c < 80)), "{plot}");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("| NoProp-FM | n/a | n/a | n/a | n/a | n/a | n/a | 0 | n/a |"),
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
