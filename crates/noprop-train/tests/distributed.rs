//! `mpirun -np 2 noprop train ...` against one process (feature `mpi`; Open
//! MPI's `mpirun` on the PATH). Run with
//! `cargo test -p noprop-train --features mpi --test distributed`.
//!
//! - NoProp-DT, blocks split over the processes: the checkpoint is the one
//!   process's, tensor for tensor and byte for byte; resumed under mpirun
//!   (and by one process), the run continues to the one process's result.
//! - NoProp-FM and -CT, data parallel: the same losses to rounding, the
//!   same test accuracy within a point.
//! - A variant that cannot split, and a failure on rank 0, end the job with
//!   the error and a non-zero exit, without hanging.
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use noprop_checkpoint::Checkpoint;

const BIN: &str = env!("CARGO_BIN_EXE_noprop");
/// No test may hang CI: a job still running after this is killed.
const TIMEOUT: Duration = Duration::from_secs(300);

fn wait(mut command: Command) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the command (is mpirun on the PATH?)");
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            panic!("{command:?} ran for more than {TIMEOUT:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `noprop ARGS` in one process with one kernel thread.
fn one_process(args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args).arg("--threads").arg("1");
    wait(c)
}

/// `mpirun -np N noprop ARGS`, one kernel thread per process.
fn mpirun(np: usize, args: &[&str]) -> Output {
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "-np"])
        .arg(np.to_string())
        .args(["-x", "RAYON_NUM_THREADS=1", BIN])
        .args(args);
    wait(c)
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tensor_bits(path: &Path) -> std::collections::BTreeMap<String, Vec<u32>> {
    Checkpoint::load(path, &candle_core::Device::Cpu)
        .unwrap()
        .bit_patterns()
        .unwrap()
}

fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The arguments as `&str`s.
fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn run_dir(tmp: &tempfile::TempDir, name: &str) -> PathBuf {
    tmp.path().join(name)
}

const DT: [&str; 14] = [
    "train",
    "--variant",
    "dt",
    "--train-limit",
    "256",
    "--test-limit",
    "100",
    "--batch-size",
    "64",
    "--set",
    "dt.num_blocks=4",
    "--set",
    "dt.parallel_blocks=true",
    "--no-progress",
];

#[test]
fn dt_over_two_processes_is_one_process_bit_for_bit_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two, resumed) = (
        run_dir(&tmp, "one"),
        run_dir(&tmp, "two"),
        run_dir(&tmp, "resumed"),
    );
    let with = |dir: &Path, epochs: &str| -> Vec<String> {
        let mut a: Vec<String> = DT.iter().map(|s| s.to_string()).collect();
        a.extend([
            "--epochs".into(),
            epochs.into(),
            "--out".into(),
            dir.display().to_string(),
        ]);
        a
    };
    ok(&one_process(&refs(&with(&one, "2"))), "one process");
    ok(&mpirun(2, &refs(&with(&two, "2"))), "mpirun -np 2");
    let expected = tensor_bits(&one.join("last.safetensors"));
    assert!(tensor_bits(&two.join("last.safetensors")) == expected);
    // Nothing but the file's tensors and metadata: byte for byte.
    assert_eq!(
        std::fs::read(one.join("last.safetensors")).unwrap(),
        std::fs::read(two.join("last.safetensors")).unwrap()
    );
    // Rank 0 alone wrote the run directory; the logged losses agree.
    let (m1, m2) = (metrics(&one), metrics(&two));
    assert_eq!(m2.len(), 2);
    for (a, b) in m1.iter().zip(&m2) {
        assert_eq!(a["train_loss"], b["train_loss"]);
        assert_eq!(a["test_accuracy"], b["test_accuracy"]);
    }

    // One epoch under mpirun, resumed under mpirun to two: the same model.
    ok(
        &mpirun(2, &refs(&with(&resumed, "1"))),
        "mpirun, first epoch",
    );
    let resume = [
        "train",
        "--resume",
        resumed.to_str().unwrap(),
        "--epochs",
        "2",
        "--no-progress",
    ];
    ok(&mpirun(2, &resume), "mpirun --resume");
    assert!(tensor_bits(&resumed.join("last.safetensors")) == expected);
    // ... and by one process, with a different process count, to three.
    let mut resume_3 = resume;
    resume_3[4] = "3";
    ok(&one_process(&resume_3), "one process --resume");
    let mut three = one.clone();
    three.set_file_name("three");
    ok(
        &one_process(&refs(&with(&three, "3"))),
        "one process, 3 epochs",
    );
    assert!(
        tensor_bits(&resumed.join("last.safetensors"))
            == tensor_bits(&three.join("last.safetensors"))
    );
}

#[test]
fn fm_and_ct_data_parallel_match_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    for (variant, steps_key) in [
        ("fm", "fm.inference_steps=10"),
        ("ct", "ct.inference_steps=10"),
    ] {
        let (one, two) = (
            run_dir(&tmp, &format!("{variant}-one")),
            run_dir(&tmp, &format!("{variant}-two")),
        );
        let args = |dir: &Path| -> Vec<String> {
            [
                "train",
                "--variant",
                variant,
                "--train-limit",
                "1024",
                "--test-limit",
                "300",
                "--batch-size",
                "64",
                "--epochs",
                "2",
                "--set",
                steps_key,
                "--no-progress",
                "--out",
                dir.to_str().unwrap(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        };
        ok(&one_process(&refs(&args(&one))), "one process");
        ok(&mpirun(2, &refs(&args(&two))), "mpirun -np 2");
        for (a, b) in metrics(&one).iter().zip(&metrics(&two)) {
            let (la, lb) = (
                a["train_loss"].as_f64().unwrap(),
                b["train_loss"].as_f64().unwrap(),
            );
            assert!(
                (la - lb).abs() <= 1e-4 * la.abs(),
                "{variant} epoch {}: train loss {la} vs {lb}",
                a["epoch"]
            );
            let (ta, tb) = (
                a["test_accuracy"].as_f64().unwrap(),
                b["test_accuracy"].as_f64().unwrap(),
            );
            assert!(
                (ta - tb).abs() <= 0.01,
                "{variant}: test accuracy {ta} vs {tb}"
            );
        }
        // The checkpoint is an ordinary one: one process evaluates it.
        let eval = one_process(&[
            "eval",
            "--checkpoint",
            two.join("last.safetensors").to_str().unwrap(),
            "--steps",
            "10",
        ]);
        ok(&eval, "noprop eval of the distributed checkpoint");
    }
}

#[test]
fn errors_end_the_whole_job_with_the_message() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = run_dir(&tmp, "backprop");
    // A variant that does not split: every rank fails at the same point.
    let out = mpirun(
        2,
        &[
            "train",
            "--variant",
            "backprop",
            "--train-limit",
            "128",
            "--test-limit",
            "50",
            "--epochs",
            "1",
            "--no-progress",
            "--out",
            dir.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("backprop does not train across processes"),
        "{stderr}"
    );
    assert!(!dir.join("last.safetensors").exists());

    // Rank 0 refuses the run directory (a run is there): the others stop too.
    let existing = run_dir(&tmp, "existing");
    std::fs::create_dir_all(&existing).unwrap();
    std::fs::write(existing.join("metrics.jsonl"), "").unwrap();
    let mut args: Vec<&str> = DT.to_vec();
    args.extend(["--epochs", "1", "--out", existing.to_str().unwrap()]);
    let out = mpirun(2, &args);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already holds a run"), "{stderr}");
}
