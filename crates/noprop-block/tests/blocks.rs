//! Behaviour of the DT and CT/FM blocks: parameter counts, shapes, modes,
//! the image-feature split, BatchNorm statistics, seeded initialisation,
//! gradient flow and input errors.

use candle_core::{DType, Device, Result, Tensor};
use noprop_block::{BlockConfig, CtFmBlock, DtBlock, Mode};
use noprop_core::{ParamStore, SeededRng};

const DEV: Device = Device::Cpu;

fn dt(config: &BlockConfig, seed: u64) -> (ParamStore, DtBlock) {
    let store = ParamStore::new(SeededRng::new(seed));
    let block = DtBlock::new(config, store.var_builder(DType::F32, &DEV)).unwrap();
    (store, block)
}

fn ct(config: &BlockConfig, seed: u64) -> (ParamStore, CtFmBlock) {
    let store = ParamStore::new(SeededRng::new(seed));
    let block = CtFmBlock::new(config, store.var_builder(DType::F32, &DEV)).unwrap();
    (store, block)
}

/// Random images, latents and times for a batch of `b`.
fn inputs(config: &BlockConfig, b: usize, seed: u64) -> (Tensor, Tensor, Tensor) {
    let mut rng = SeededRng::new(seed);
    let (c, h) = (config.in_channels, config.image_size);
    let x = rng.normal((b, c, h, h), &DEV).unwrap();
    let z = rng.normal((b, config.latent_dim), &DEV).unwrap();
    let t = rng.uniform(0.0, 1.0, b, &DEV).unwrap();
    (x, z, t)
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn parameter_counts_match_paper_table_5() {
    // Independent count (valid 3x3 convs, MNIST 28 -> 4x4x128 = 2048):
    // convs 320 + 18,496 + 73,856; image FC 2048*256+256 = 524,544.
    // DT: + image BN 512; latent 2,816 + 2*65,792 + 3*512; fusion 131,328
    //     + 512 + 32,896 + 256 + 1,290 = 919,946.
    // CT/FM: latent 2,816; time 64*256+256 = 16,640; fusion 196,864
    //     + 32,896 + 1,290 = 867,722.
    let config = BlockConfig::for_mnist(10, 10);
    let (dt_store, dt_block) = dt(&config, 0);
    assert_eq!(dt_block.num_parameters(), 919_946);
    assert_eq!(dt_store.count_trainable(""), 919_946);
    let (ct_store, ct_block) = ct(&config, 0);
    assert_eq!(ct_block.num_parameters(), 867_722);
    assert_eq!(ct_store.count_trainable(""), 867_722);
    // Structural and store counts also agree for conv latents and CIFAR-100.
    for config in [
        BlockConfig::for_mnist(784, 10),
        BlockConfig::for_cifar(20, 100),
    ] {
        let (s, b) = dt(&config, 0);
        assert_eq!(b.num_parameters(), s.count_trainable(""));
        let (s, b) = ct(&config, 0);
        assert_eq!(b.num_parameters(), s.count_trainable(""));
    }
}

#[test]
fn shapes_for_mnist_and_cifar_with_mlp_and_conv_latents() -> Result<()> {
    let configs = [
        BlockConfig::for_mnist(10, 10),
        BlockConfig::for_mnist(784, 10),
        BlockConfig::for_cifar(20, 100),
        BlockConfig::for_cifar(3072, 10),
    ];
    for config in configs {
        let (x, z, t) = inputs(&config, 3, 1);
        let mut rng = SeededRng::new(2);
        let (_, d) = dt(&config, 0);
        assert_eq!(d.image_features(&x, Mode::Eval)?.dims(), &[3, 256]);
        assert_eq!(
            d.forward(&x, &z, Mode::Eval)?.dims(),
            &[3, config.num_classes]
        );
        assert_eq!(
            d.forward(&x, &z, Mode::Train(&mut rng))?.dims(),
            &[3, config.num_classes]
        );
        let (_, c) = ct(&config, 0);
        assert_eq!(c.image_features(&x, Mode::Eval)?.dims(), &[3, 256]);
        assert_eq!(
            c.forward(&x, &z, &t, Mode::Eval)?.dims(),
            &[3, config.num_classes]
        );
        let logits = c.forward(&x, &z, &t, Mode::Train(&mut rng))?;
        assert_eq!(logits.dims(), &[3, config.num_classes]);
        assert!(values(&logits).iter().all(|v| v.is_finite()));
    }
    Ok(())
}

#[test]
fn eval_is_deterministic_and_train_dropout_follows_the_rng() -> Result<()> {
    for config in [
        BlockConfig::for_mnist(10, 10),
        BlockConfig::for_mnist(784, 10),
    ] {
        let (x, z, t) = inputs(&config, 4, 3);
        let (_, d) = dt(&config, 0);
        let (_, c) = ct(&config, 0);
        type Run<'a> = Box<dyn Fn(Mode) -> Result<Tensor> + 'a>;
        let runs: [Run; 2] = [
            Box::new(|m| d.forward(&x, &z, m)),
            Box::new(|m| c.forward(&x, &z, &t, m)),
        ];
        for run in runs {
            assert_eq!(values(&run(Mode::Eval)?), values(&run(Mode::Eval)?));
            let mut rng = SeededRng::new(9);
            let mut same = rng.clone();
            let first = values(&run(Mode::Train(&mut rng))?);
            let replay = values(&run(Mode::Train(&mut same))?);
            let second = values(&run(Mode::Train(&mut rng))?);
            // Same generator state: same masks, same output (DT's running
            // statistics changed in between but train uses batch statistics).
            assert_eq!(first, replay);
            assert_ne!(first, second);
            assert_ne!(first, values(&run(Mode::Eval)?));
        }
    }
    Ok(())
}

#[test]
fn image_feature_split_equals_full_forward() -> Result<()> {
    for config in [
        BlockConfig::for_mnist(10, 10),
        BlockConfig::for_cifar(3072, 10),
    ] {
        let (x, z, t) = inputs(&config, 4, 4);
        let (_, d) = dt(&config, 5);
        let (_, c) = ct(&config, 5);

        let f = d.image_features(&x, Mode::Eval)?;
        assert_eq!(
            values(&d.forward_from_features(&f, &z, Mode::Eval)?),
            values(&d.forward(&x, &z, Mode::Eval)?)
        );
        let f = c.image_features(&x, Mode::Eval)?;
        assert_eq!(
            values(&c.forward_from_features(&f, &z, &t, Mode::Eval)?),
            values(&c.forward(&x, &z, &t, Mode::Eval)?)
        );

        // In train mode the split draws the same masks in the same order.
        let (mut r1, mut r2) = (SeededRng::new(6), SeededRng::new(6));
        let full = d.forward(&x, &z, Mode::Train(&mut r1))?;
        let f = d.image_features(&x, Mode::Train(&mut r2))?;
        assert_eq!(
            values(&d.forward_from_features(&f, &z, Mode::Train(&mut r2))?),
            values(&full)
        );
        let full = c.forward(&x, &z, &t, Mode::Train(&mut r1))?;
        let f = c.image_features(&x, Mode::Train(&mut r2))?;
        assert_eq!(
            values(&c.forward_from_features(&f, &z, &t, Mode::Train(&mut r2))?),
            values(&full)
        );

        // Cached features serve other latents and times (what ODE inference does).
        let (_, z2, t2) = inputs(&config, 4, 7);
        let f = c.image_features(&x, Mode::Eval)?;
        assert_eq!(
            values(&c.forward_from_features(&f, &z2, &t2, Mode::Eval)?),
            values(&c.forward(&x, &z2, &t2, Mode::Eval)?)
        );
    }
    Ok(())
}

#[test]
fn batch_norm_running_stats_update_in_train_only() -> Result<()> {
    let config = BlockConfig::for_mnist(10, 10);
    let (store, d) = dt(&config, 0);
    let (x, z, _) = inputs(&config, 4, 8);
    let names: Vec<String> = store
        .names()
        .into_iter()
        .filter(|n| n.contains("running_"))
        .collect();
    // image.bn, latent.bn1-3, fusion.bn1-2, mean and variance each.
    assert_eq!(names.len(), 12);
    let snapshot = || {
        names
            .iter()
            .map(|n| values(&store.get(n).unwrap()))
            .collect::<Vec<_>>()
    };
    let initial = snapshot();
    d.forward(&x, &z, Mode::Eval)?;
    assert_eq!(snapshot(), initial);
    d.forward(&x, &z, Mode::Train(&mut SeededRng::new(0)))?;
    let trained = snapshot();
    for (name, (before, after)) in names.iter().zip(initial.iter().zip(trained.iter())) {
        assert_ne!(before, after, "{name} did not move");
    }
    // Eval after training reads the running statistics: output changes.
    let eval_before = {
        let (_, fresh) = dt(&config, 0);
        values(&fresh.forward(&x, &z, Mode::Eval)?)
    };
    assert_ne!(values(&d.forward(&x, &z, Mode::Eval)?), eval_before);
    Ok(())
}

#[test]
fn same_seed_same_block_different_seed_different_block() {
    let bits = |t: &Tensor| values(t).iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let builders: [fn(u64) -> ParamStore; 2] = [
        |s| dt(&BlockConfig::for_mnist(10, 10), s).0,
        |s| ct(&BlockConfig::for_mnist(10, 10), s).0,
    ];
    for build in builders {
        let (a, b, other) = (build(11), build(11), build(12));
        let (ta, tb, to) = (a.named_tensors(), b.named_tensors(), other.named_tensors());
        assert_eq!(ta.len(), tb.len());
        for (((na, va), (nb, vb)), (no, vo)) in ta.iter().zip(tb.iter()).zip(to.iter()) {
            assert_eq!((na, na), (nb, no));
            assert_eq!(bits(va), bits(vb), "{na} differs for the same seed");
            // FC and conv weights and biases are drawn; BN starts constant.
            if !na.contains(".bn") {
                assert_ne!(bits(va), bits(vo), "{na} equal for different seeds");
            }
        }
    }
}

/// Every trainable parameter receives a non-zero gradient from sum(logits).
fn assert_gradient_reaches_every_parameter(store: &ParamStore, logits: &Tensor) {
    let grads = logits.sum_all().unwrap().backward().unwrap();
    let params = store.trainable("");
    assert!(!params.is_empty());
    for (name, var) in params {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let norm = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            norm > 0.0 && norm.is_finite(),
            "gradient of {name} has squared norm {norm}"
        );
    }
}

#[test]
fn gradient_reaches_every_parameter() -> Result<()> {
    for config in [
        BlockConfig::for_mnist(10, 10),
        BlockConfig::for_mnist(784, 10),
    ] {
        let (x, z, t) = inputs(&config, 4, 10);
        let (store, d) = dt(&config, 1);
        let logits = d.forward(&x, &z, Mode::Train(&mut SeededRng::new(1)))?;
        assert_gradient_reaches_every_parameter(&store, &logits);
        let (store, c) = ct(&config, 1);
        let logits = c.forward(&x, &z, &t, Mode::Train(&mut SeededRng::new(1)))?;
        assert_gradient_reaches_every_parameter(&store, &logits);
    }
    Ok(())
}

#[test]
fn bad_inputs_are_errors_naming_the_problem() {
    let config = BlockConfig::for_mnist(10, 10);
    let (x, z, t) = inputs(&config, 2, 0);
    let (_, d) = dt(&config, 0);
    let (_, c) = ct(&config, 0);
    let err = |r: Result<Tensor>| r.unwrap_err().to_string();

    let cifar = Tensor::zeros((2, 3, 32, 32), DType::F32, &DEV).unwrap();
    assert!(err(d.forward(&cifar, &z, Mode::Eval)).contains("[B, 1, 28, 28]"));
    assert!(err(c.image_features(&cifar, Mode::Eval)).contains("[B, 1, 28, 28]"));
    let z_wrong = Tensor::zeros((2, 11), DType::F32, &DEV).unwrap();
    assert!(err(d.forward(&x, &z_wrong, Mode::Eval)).contains("latent z [2, 10]"));
    assert!(err(c.forward(&x, &z_wrong, &t, Mode::Eval)).contains("latent z [2, 10]"));
    let z_batch = Tensor::zeros((3, 10), DType::F32, &DEV).unwrap();
    assert!(err(d.forward(&x, &z_batch, Mode::Eval)).contains("latent z [2, 10]"));
    let t_wrong = Tensor::zeros(3, DType::F32, &DEV).unwrap();
    assert!(err(c.forward(&x, &z, &t_wrong, Mode::Eval)).contains("time t [2]"));
    let features = Tensor::zeros((2, 128), DType::F32, &DEV).unwrap();
    assert!(err(d.forward_from_features(&features, &z, Mode::Eval)).contains("features [B, 256]"));

    // BatchNorm batch statistics need two examples; eval works on one.
    let x1 = x.narrow(0, 0, 1).unwrap();
    let z1 = z.narrow(0, 0, 1).unwrap();
    let mut rng = SeededRng::new(0);
    assert!(err(d.forward(&x1, &z1, Mode::Train(&mut rng))).contains("at least 2"));
    assert_eq!(d.forward(&x1, &z1, Mode::Eval).unwrap().dims(), &[1, 10]);

    let store = ParamStore::new(SeededRng::new(0));
    let bad = BlockConfig::new(1, 12, 10, 10);
    assert!(DtBlock::new(&bad, store.var_builder(DType::F32, &DEV))
        .unwrap_err()
        .to_string()
        .contains("image_size"));
    assert!(CtFmBlock::new(&bad, store.var_builder(DType::F32, &DEV)).is_err());
}

#[test]
fn ct_fm_logits_depend_on_time_and_accept_a_time_column() -> Result<()> {
    let config = BlockConfig::for_mnist(10, 10);
    let (x, z, t) = inputs(&config, 3, 12);
    let (_, c) = ct(&config, 0);
    let f = c.image_features(&x, Mode::Eval)?;
    let logits = values(&c.forward_from_features(&f, &z, &t, Mode::Eval)?);
    let column = t.unsqueeze(1)?;
    assert_eq!(
        values(&c.forward_from_features(&f, &z, &column, Mode::Eval)?),
        logits
    );
    let later = (&t + 0.01)?;
    assert_ne!(
        values(&c.forward_from_features(&f, &z, &later, Mode::Eval)?),
        logits
    );
    Ok(())
}

/// `DtBlock::dropout_words` is what a training forward pass draws: skipping
/// that many words leaves a generator where the forward pass leaves it (for
/// an MLP and a convolutional latent branch, with and without dropout).
/// 32*13*13 + 64*11*11 + 128*4*4 = 15,200 words per MNIST example.
#[test]
fn dt_dropout_words_are_what_a_training_pass_draws() {
    for config in [
        BlockConfig::for_mnist(10, 10),
        BlockConfig::for_mnist(784, 10),
        BlockConfig::for_mnist(10, 10).with_dropout(0.0),
    ] {
        let (_store, block) = dt(&config, 3);
        let (x, z, _) = inputs(&config, 3, 4);
        let mut ran = SeededRng::new(8);
        block.forward(&x, &z, Mode::Train(&mut ran)).unwrap();
        let mut skipped = SeededRng::new(8);
        skipped.skip_words(block.dropout_words(3));
        assert_eq!(ran.next_u64(), skipped.next_u64());
    }
    let (_store, block) = dt(&BlockConfig::for_mnist(10, 10), 3);
    assert_eq!(block.dropout_words(2), 2 * 15_200);
}
