//! The learned noise schedule of NoProp-CT (paper Appendix B, after Kingma
//! et al. 2021, "Variational Diffusion Models").
//!
//! # Definition (t in [0, 1], 0 = noise, 1 = clean)
//!
//! ```text
//! g(t)         = softplus(s) t + (1/H) sum_k softplus(v_k) sigmoid(softplus(w_k) t + b_k)
//! gamma_bar(t) = (g(t) - g(0)) / (g(1) - g(0))                  in [0, 1], increasing
//! gamma(t)     = gamma_0 + (gamma_1 - gamma_0) (1 - gamma_bar(t))
//! alpha_bar(t) = sigmoid(-gamma(t)),   SNR(t) = exp(-gamma(t))
//! ```
//!
//! g is a two-layer network (H hidden sigmoid units plus a linear skip) whose
//! weights are softplus of raw variables, hence positive, so g is strictly
//! increasing (the skip keeps g(1) > g(0) whatever the hidden units do).
//! gamma runs from gamma(0) = gamma_1 (noise end) to gamma(1) = gamma_0
//! (clean end), so SNR and alpha_bar increase with t **as long as gamma_1 >
//! gamma_0**; [`LearnedSchedule::check_ordered`] verifies it (the endpoints
//! are free trainable scalars, as in the paper).
//!
//! Derivatives, analytic and built from candle ops, so they are
//! differentiable and the schedule trains through the SNR'-weighted loss:
//!
//! ```text
//! g'(t)     = softplus(s) + (1/H) sum_k softplus(v_k) softplus(w_k) sigma_k (1 - sigma_k)
//! gamma'(t) = -(gamma_1 - gamma_0) g'(t) / (g(1) - g(0))     <= 0
//! SNR'(t)   = -gamma'(t) SNR(t)                              >= 0
//! ```
//!
//! # Initial endpoints (documented choice; the paper gives none)
//!
//! Default gamma_1 = +ln 99, gamma_0 = -ln 99: alpha_bar runs from 0.01 to
//! 0.99. A faithful PyTorch run (spec, last section) with +-ln 9999 (alpha_bar
//! 1e-4 to 0.9999, SNR' weights spanning 1.8e-3 to 1.8e5) learned only the
//! near-clean end (47% after one MNIST epoch); with +-ln 99 it reached 77%,
//! 79%, 92% after 1, 2, 3 epochs. The schedule barely moves in a few epochs,
//! so the start matters; keep weight decay off these variables.
//!
//! The hidden units start with s, v_k at softplus^-1(1) (weight 1), raw w_k
//! ~ N(0, 1) and b_k ~ U(-2, 2), so the initial gamma_bar is close to linear
//! in t (g' varies by about 10% over [0, 1]).
//!
//! # Variables (under the caller's `VarBuilder` prefix, e.g. "schedule.")
//!
//! `gamma_0` `[1]`, `gamma_1` `[1]`, `net.skip_raw` `[1]`, `net.hidden.weight_raw`
//! `[H]`, `net.hidden.bias` `[H]`, `net.out.weight_raw` `[H]`.
//!
//! # Importance sampling of t
//!
//! The CT denoising loss is E_{t ~ U`[0,1]`} [ (eta/2) SNR'(t) L(t) ]. Since SNR'
//! spans orders of magnitude, sampling t with density p(t) proportional to
//! SNR'(t) and weighting by SNR'(t) / p(t) gives the same expectation (and
//! the same gradient, p held constant) with far lower variance; for p exactly
//! proportional, the weight is the constant SNR(1) - SNR(0).
//! [`LearnedSchedule::sample_t_importance`] draws from a piecewise-constant
//! p built from SNR on a grid (exact in each cell's mass), optionally mixed
//! with the uniform density so no region has density near zero.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::rng::SeededRng;

/// softplus^-1(1) = ln(e - 1): the raw value of a weight that starts at 1.
const SOFTPLUS_INV_ONE: f64 = 0.541_324_854_612_918_1;

/// Configuration of a [`LearnedSchedule`] (serde: every field optional).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LearnedScheduleConfig {
    /// Initial gamma_0 = gamma(1), the clean end: alpha_bar(1) = sigmoid(-gamma_0).
    pub gamma_0_init: f64,
    /// Initial gamma_1 = gamma(0), the noise end: alpha_bar(0) = sigmoid(-gamma_1).
    pub gamma_1_init: f64,
    /// Hidden units H of the monotone network.
    pub hidden: usize,
}

impl Default for LearnedScheduleConfig {
    fn default() -> Self {
        Self::from_alpha_bar_range(0.01, 0.99, 1024)
    }
}

impl LearnedScheduleConfig {
    /// The endpoints that make alpha_bar start at `alpha_bar_noise` (t = 0)
    /// and end at `alpha_bar_clean` (t = 1): gamma = ln((1 - ab) / ab).
    pub fn from_alpha_bar_range(alpha_bar_noise: f64, alpha_bar_clean: f64, hidden: usize) -> Self {
        let gamma = |ab: f64| ((1.0 - ab) / ab).ln();
        Self {
            gamma_0_init: gamma(alpha_bar_clean),
            gamma_1_init: gamma(alpha_bar_noise),
            hidden,
        }
    }
}

/// Every schedule quantity at a batch of times, from one network evaluation.
#[derive(Debug, Clone)]
pub struct ScheduleValues {
    /// gamma(t) `[B]`.
    pub gamma: Tensor,
    /// gamma'(t) `[B]` (<= 0).
    pub gamma_prime: Tensor,
    /// alpha_bar(t) = sigmoid(-gamma) `[B]`.
    pub alpha_bar: Tensor,
    /// SNR(t) = exp(-gamma) `[B]`.
    pub snr: Tensor,
    /// SNR'(t) = -gamma' SNR `[B]` (>= 0).
    pub snr_prime: Tensor,
}

/// Times drawn with density p(t) ~ SNR'(t) (see the module doc).
#[derive(Debug, Clone)]
pub struct ImportanceSample {
    /// The sampled times `[n]`, in the schedule's dtype.
    pub t: Tensor,
    /// The sampling density p(t) at each sample `[n]` (a constant: no gradient).
    /// Weight the loss by SNR'(t) / density.
    pub density: Tensor,
}

/// The trainable CT schedule (see the module doc).
#[derive(Debug, Clone)]
pub struct LearnedSchedule {
    gamma_0: Tensor,
    gamma_1: Tensor,
    skip_raw: Tensor,
    hidden_weight_raw: Tensor,
    hidden_bias: Tensor,
    out_weight_raw: Tensor,
    config: LearnedScheduleConfig,
}

/// softplus(x) = max(x, 0) + ln(1 + exp(-|x|)), stable for any x.
fn softplus(x: &Tensor) -> Result<Tensor> {
    x.relu()? + ((x.abs()?.neg()?.exp()? + 1.0)?.log()?)
}

impl LearnedSchedule {
    /// Creates (or reuses) the variables in `vb`; their dtype is `vb`'s.
    pub fn new(config: &LearnedScheduleConfig, vb: VarBuilder) -> Result<Self> {
        let c = *config;
        if c.hidden == 0 {
            candle_core::bail!("learned schedule: hidden must be at least 1");
        }
        if !(c.gamma_0_init.is_finite() && c.gamma_1_init.is_finite())
            || c.gamma_1_init <= c.gamma_0_init
        {
            candle_core::bail!(
                "learned schedule: need finite gamma_1_init > gamma_0_init (noise end above \
                 clean end), got gamma_0_init = {}, gamma_1_init = {}",
                c.gamma_0_init,
                c.gamma_1_init
            );
        }
        let h = c.hidden;
        let gamma_0 = vb.get_with_hints(1, "gamma_0", Init::Const(c.gamma_0_init))?;
        let gamma_1 = vb.get_with_hints(1, "gamma_1", Init::Const(c.gamma_1_init))?;
        let net = vb.pp("net");
        let skip_raw = net.get_with_hints(1, "skip_raw", Init::Const(SOFTPLUS_INV_ONE))?;
        let hidden_weight_raw = net.get_with_hints(
            h,
            "hidden.weight_raw",
            Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        )?;
        let hidden_bias =
            net.get_with_hints(h, "hidden.bias", Init::Uniform { lo: -2.0, up: 2.0 })?;
        let out_weight_raw =
            net.get_with_hints(h, "out.weight_raw", Init::Const(SOFTPLUS_INV_ONE))?;
        Ok(Self {
            gamma_0,
            gamma_1,
            skip_raw,
            hidden_weight_raw,
            hidden_bias,
            out_weight_raw,
            config: c,
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &LearnedScheduleConfig {
        &self.config
    }

    /// The dtype of its parameters.
    pub fn dtype(&self) -> DType {
        self.gamma_0.dtype()
    }

    /// The device its parameters live on.
    pub fn device(&self) -> &Device {
        self.gamma_0.device()
    }

    /// (gamma_0, gamma_1) as host values.
    pub fn endpoints(&self) -> Result<(f64, f64)> {
        let g0 = self.gamma_0.to_dtype(DType::F64)?.to_vec1::<f64>()?[0];
        let g1 = self.gamma_1.to_dtype(DType::F64)?.to_vec1::<f64>()?[0];
        Ok((g0, g1))
    }

    /// An error unless gamma_1 > gamma_0, the condition for SNR' >= 0.
    pub fn check_ordered(&self) -> Result<()> {
        let (g0, g1) = self.endpoints()?;
        if g1.partial_cmp(&g0) != Some(std::cmp::Ordering::Greater) {
            candle_core::bail!(
                "learned schedule: gamma_1 = {g1} must exceed gamma_0 = {g0}, else SNR \
                 decreases in t and the denoising loss weight turns negative"
            );
        }
        Ok(())
    }

    /// g(t) and g'(t) for t [N], each [N].
    fn net(&self, t: &Tensor) -> Result<(Tensor, Tensor)> {
        let h = self.config.hidden as f64;
        let skip = softplus(&self.skip_raw)?; // [1]
        let w = softplus(&self.hidden_weight_raw)?.unsqueeze(0)?; // [1, H]
        let v = softplus(&self.out_weight_raw)?.unsqueeze(1)?; // [H, 1]
        let pre = t
            .unsqueeze(1)?
            .broadcast_mul(&w)?
            .broadcast_add(&self.hidden_bias.unsqueeze(0)?)?; // [N, H]
        let sig = candle_nn::ops::sigmoid(&pre)?;
        let g = (t.broadcast_mul(&skip)? + (sig.matmul(&v)?.squeeze(1)? / h)?)?;
        let dsig = (&sig * (1.0 - &sig)?)?.broadcast_mul(&w)?; // d sigma_k / dt
        let g_prime = (dsig.matmul(&v)?.squeeze(1)? / h)?.broadcast_add(&skip)?;
        Ok((g, g_prime))
    }

    fn check_times(&self, t: &Tensor) -> Result<Tensor> {
        if t.rank() != 1 {
            candle_core::bail!(
                "learned schedule: t must be a [B] tensor, got shape {:?}",
                t.dims()
            );
        }
        t.to_dtype(self.dtype())
    }

    /// Every quantity at t `[B]` (converted to the schedule's dtype), from one
    /// network evaluation.
    pub fn evaluate(&self, t: &Tensor) -> Result<ScheduleValues> {
        let t = self.check_times(t)?;
        let n = t.dim(0)?;
        let ends = Tensor::new(&[0f64, 1.0], t.device())?.to_dtype(t.dtype())?;
        let (g, g_prime) = self.net(&Tensor::cat(&[&t, &ends], 0)?)?;
        let g_t = g.narrow(0, 0, n)?;
        let g_prime = g_prime.narrow(0, 0, n)?;
        let g_range = (g.narrow(0, n + 1, 1)? - g.narrow(0, n, 1)?)?; // [1]
        let gamma_bar = g_t
            .broadcast_sub(&g.narrow(0, n, 1)?)?
            .broadcast_div(&g_range)?;
        let span = (&self.gamma_1 - &self.gamma_0)?; // [1]
        let gamma = (1.0 - gamma_bar)?
            .broadcast_mul(&span)?
            .broadcast_add(&self.gamma_0)?;
        let gamma_prime = g_prime
            .broadcast_mul(&span)?
            .broadcast_div(&g_range)?
            .neg()?;
        let snr = gamma.neg()?.exp()?;
        let snr_prime = (gamma_prime.neg()? * &snr)?;
        let alpha_bar = candle_nn::ops::sigmoid(&gamma.neg()?)?;
        Ok(ScheduleValues {
            gamma,
            gamma_prime,
            alpha_bar,
            snr,
            snr_prime,
        })
    }

    /// gamma(t) `[B]`.
    pub fn gamma(&self, t: &Tensor) -> Result<Tensor> {
        Ok(self.evaluate(t)?.gamma)
    }

    /// gamma'(t) `[B]`, <= 0.
    pub fn gamma_prime(&self, t: &Tensor) -> Result<Tensor> {
        Ok(self.evaluate(t)?.gamma_prime)
    }

    /// alpha_bar(t) = sigmoid(-gamma(t)) `[B]`.
    pub fn alpha_bar(&self, t: &Tensor) -> Result<Tensor> {
        Ok(self.evaluate(t)?.alpha_bar)
    }

    /// SNR(t) = exp(-gamma(t)) `[B]`.
    pub fn snr(&self, t: &Tensor) -> Result<Tensor> {
        Ok(self.evaluate(t)?.snr)
    }

    /// SNR'(t) = dSNR/dt `[B]`, >= 0 (differentiable).
    pub fn snr_prime(&self, t: &Tensor) -> Result<Tensor> {
        Ok(self.evaluate(t)?.snr_prime)
    }

    /// alpha_bar(0) = sigmoid(-gamma_1) `[1]`, exactly (gamma_bar(0) = 0); for the KL term.
    pub fn alpha_bar_noise_end(&self) -> Result<Tensor> {
        candle_nn::ops::sigmoid(&self.gamma_1.neg()?)
    }

    /// alpha_bar(1) = sigmoid(-gamma_0) `[1]`, exactly; for the noised label z_1.
    pub fn alpha_bar_clean_end(&self) -> Result<Tensor> {
        candle_nn::ops::sigmoid(&self.gamma_0.neg()?)
    }

    /// The probability-flow drift at time t (one time for the whole batch, as
    /// an ODE stepper supplies it) for latents z [B, d] and the block's
    /// prediction u_hat [B, d], in the bounded form
    /// dz/dt = (-gamma'(t)/2) (sqrt(alpha_bar) u_hat - alpha_bar z),
    /// equal to alpha_bar' / (2 (1 - alpha_bar)) (u_hat / sqrt(alpha_bar) - z)
    /// without its 1/sqrt(alpha_bar) blow-up near t = 0. The schedule is
    /// evaluated at the single time t and detached (inference needs no
    /// gradient), so the cost does not grow with B.
    pub fn probability_flow_drift(&self, z: &Tensor, u_hat: &Tensor, t: f64) -> Result<Tensor> {
        let (half_rate, ab) = self.drift_coefficients(t)?;
        let toward = ((u_hat * ab.sqrt())? - (z * ab)?)?;
        toward * half_rate
    }

    /// (-gamma'(t)/2, alpha_bar(t)) at one time t, as host values.
    pub fn drift_coefficients(&self, t: f64) -> Result<(f64, f64)> {
        let tt = Tensor::new(&[t], self.device())?.to_dtype(self.dtype())?;
        let v = self.evaluate(&tt)?;
        let gp = v
            .gamma_prime
            .detach()
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?[0];
        let ab = v
            .alpha_bar
            .detach()
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?[0];
        Ok((-0.5 * gp, ab))
    }

    /// (t, SNR'(t)) at `points` >= 2 evenly spaced times in [0, 1].
    pub fn snr_prime_grid(&self, points: usize) -> Result<Vec<(f64, f64)>> {
        if points < 2 {
            candle_core::bail!("learned schedule: a grid needs at least 2 points, got {points}");
        }
        let ts: Vec<f64> = (0..points)
            .map(|i| i as f64 / (points - 1) as f64)
            .collect();
        let t = Tensor::new(ts.as_slice(), self.device())?;
        let sp = self.snr_prime(&t)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        Ok(ts.into_iter().zip(sp).collect())
    }

    /// Draws `n` times with density
    /// p(t) = (1 - mix) SNR'(t) / (SNR(1) - SNR(0)) + mix, SNR' approximated as constant within each of `cells` equal cells
    /// of [0, 1] (each cell's mass is exact: the SNR difference across it).
    /// `uniform_mix` in [0, 1]; 0 is pure importance sampling, 1 uniform.
    /// Uses no gradient; weight the loss by `snr_prime(t) / density`.
    pub fn sample_t_importance(
        &self,
        n: usize,
        cells: usize,
        uniform_mix: f64,
        rng: &mut SeededRng,
    ) -> Result<ImportanceSample> {
        if cells == 0 {
            candle_core::bail!("learned schedule: importance sampling needs at least 1 cell");
        }
        if !(0.0..=1.0).contains(&uniform_mix) {
            candle_core::bail!(
                "learned schedule: uniform_mix must lie in [0, 1], got {uniform_mix}"
            );
        }
        let grid: Vec<f64> = (0..=cells).map(|i| i as f64 / cells as f64).collect();
        let t = Tensor::new(grid.as_slice(), self.device())?;
        let snr = self
            .snr(&t)?
            .detach()
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        let masses: Vec<f64> = snr.windows(2).map(|w| (w[1] - w[0]).max(0.0)).collect();
        let total: f64 = masses.iter().sum();
        if !(total > 0.0 && total.is_finite()) && uniform_mix < 1.0 {
            candle_core::bail!(
                "learned schedule: SNR(1) - SNR(0) = {total} is not a positive finite mass"
            );
        }
        let width = 1.0 / cells as f64;
        // Cell probabilities P_i and densities p_i = P_i / width.
        let probs: Vec<f64> = masses
            .iter()
            .map(|m| {
                let imp = if total > 0.0 { m / total } else { 0.0 };
                (1.0 - uniform_mix) * imp + uniform_mix * width
            })
            .collect();
        let mut cdf = Vec::with_capacity(cells + 1);
        cdf.push(0.0);
        for p in &probs {
            cdf.push(cdf.last().unwrap() + p);
        }
        let norm = cdf[cells];
        let mut times = Vec::with_capacity(n);
        let mut density = Vec::with_capacity(n);
        // One draw per example (`uniform_f64_rows`: sharded like the
        // batch in data-parallel training).
        for u in rng.uniform_f64_rows(n) {
            let u = u * norm;
            // The cell i with cdf[i] <= u < cdf[i + 1], skipping empty cells.
            let i = (cdf.partition_point(|&c| c <= u).max(1) - 1).min(cells - 1);
            let within = if probs[i] > 0.0 {
                ((u - cdf[i]) / probs[i]).clamp(0.0, 1.0)
            } else {
                0.5
            };
            times.push(grid[i] + width * within);
            density.push(probs[i] / norm / width);
        }
        let dtype = self.dtype();
        Ok(ImportanceSample {
            t: Tensor::new(times, self.device())?.to_dtype(dtype)?,
            density: Tensor::new(density, self.device())?.to_dtype(dtype)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ode::OdeSolver;
    use crate::params::ParamStore;

    fn schedule(dtype: DType, seed: u64) -> (ParamStore, LearnedSchedule) {
        schedule_with(dtype, seed, LearnedScheduleConfig::default().hidden)
    }

    /// A smaller network keeps the tests that evaluate it many times fast.
    fn schedule_with(dtype: DType, seed: u64, hidden: usize) -> (ParamStore, LearnedSchedule) {
        let store = ParamStore::new(SeededRng::new(seed));
        let vb = store.var_builder(dtype, &Device::Cpu);
        let config = LearnedScheduleConfig {
            hidden,
            ..Default::default()
        };
        let s = LearnedSchedule::new(&config, vb.pp("schedule")).unwrap();
        (store, s)
    }

    fn host(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap()
    }

    fn grid(n: usize, dtype: DType) -> Tensor {
        let ts: Vec<f64> = (0..n).map(|i| i as f64 / (n - 1) as f64).collect();
        Tensor::new(ts, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    #[test]
    fn monotone_with_the_documented_endpoints() {
        let (_, s) = schedule(DType::F32, 0);
        let v = s.evaluate(&grid(1001, DType::F32)).unwrap();
        let (ab, snr, sp, gp) = (
            host(&v.alpha_bar),
            host(&v.snr),
            host(&v.snr_prime),
            host(&v.gamma_prime),
        );
        assert!((ab[0] - 0.01).abs() < 1e-6 && (ab[1000] - 0.99).abs() < 1e-6);
        assert!((snr[0] - 1.0 / 99.0).abs() < 1e-6 && (snr[1000] - 99.0).abs() < 1e-3);
        for i in 1..1001 {
            assert!(
                ab[i] > ab[i - 1] && snr[i] > snr[i - 1],
                "not increasing at {i}"
            );
        }
        assert!(sp.iter().all(|&x| x > 0.0) && gp.iter().all(|&x| x < 0.0));
        // Near-linear start: gamma' = -2 ln 99 / (g(1) - g(0)) g'(t) varies mildly.
        let (lo, hi) = gp
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), &x| (l.min(x), h.max(x)));
        assert!(hi / lo > 0.7, "gamma' from {lo} to {hi}");
        let ends = host(&s.alpha_bar_noise_end().unwrap());
        assert!((ends[0] - 0.01).abs() < 1e-7);
        s.check_ordered().unwrap();
    }

    #[test]
    fn snr_prime_matches_finite_differences() {
        // Central differences (SNR(t+h) - SNR(t-h)) / 2h; truncation error
        // ~ h^2 |SNR'''| / 6 with SNR''' / SNR' ~ (2 ln 99)^2 = 85.
        for (dtype, h, tol) in [(DType::F64, 1e-5, 1e-7), (DType::F32, 3e-3, 1e-3)] {
            let (_, s) = schedule(dtype, 5);
            let ts = [0.003, 0.1, 0.37, 0.5, 0.81, 0.997];
            let t = Tensor::new(&ts, &Device::Cpu).unwrap();
            let sp = host(&s.snr_prime(&t).unwrap());
            let plus = host(&s.snr(&(&t + h).unwrap()).unwrap());
            let minus = host(&s.snr(&(&t - h).unwrap()).unwrap());
            for i in 0..ts.len() {
                let fd = (plus[i] - minus[i]) / (2.0 * h);
                let rel = (sp[i] - fd).abs() / fd.abs();
                assert!(
                    rel < tol,
                    "{dtype:?} t={} analytic {} fd {fd} rel {rel}",
                    ts[i],
                    sp[i]
                );
            }
        }
    }

    #[test]
    fn gradients_reach_endpoints_and_network() {
        let (store, s) = schedule(DType::F32, 1);
        let t = Tensor::new(&[0.1f32, 0.4, 0.9], &Device::Cpu).unwrap();
        let v = s.evaluate(&t).unwrap();
        let loss = (v.snr_prime.sum_all().unwrap() + v.alpha_bar.sum_all().unwrap()).unwrap();
        let grads = loss.backward().unwrap();
        let vars = store.trainable("schedule.");
        assert_eq!(vars.len(), 6);
        for (name, var) in vars {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no grad for {name}"));
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(norm > 0.0 && norm.is_finite(), "{name}: |grad|^2 = {norm}");
        }
    }

    #[test]
    fn probability_flow_follows_the_exact_path() {
        // With u_hat = u (a point mass), z_t = sqrt(ab(t)) u + sqrt(1 - ab(t)) eps
        // solves the flow for fixed eps; RK4 must land on it at t = 1.
        let (_, s) = schedule_with(DType::F64, 2, 64);
        let dev = Device::Cpu;
        let u = Tensor::new(&[[1.0f64, -0.5, 0.0]], &dev).unwrap();
        let z0 = Tensor::new(&[[0.3f64, 1.2, -0.7]], &dev).unwrap();
        let z1 = OdeSolver::Rk4
            .integrate(&z0, 0.0, 1.0, 200, |z, t| {
                s.probability_flow_drift(z, &u, t)
            })
            .unwrap();
        let ab0 = host(&s.alpha_bar_noise_end().unwrap())[0];
        let ab1 = host(&s.alpha_bar_clean_end().unwrap())[0];
        let eps = ((&z0 - (&u * ab0.sqrt()).unwrap()).unwrap() / (1.0 - ab0).sqrt()).unwrap();
        let want = ((&u * ab1.sqrt()).unwrap() + (eps * (1.0 - ab1).sqrt()).unwrap()).unwrap();
        let err = (z1 - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(err < 1e-6, "{err}");
    }

    #[test]
    fn importance_sampling_reweights_to_the_uniform_expectation() {
        // E_p[SNR'(t) f(t) / p(t)] = integral_0^1 SNR'(t) f(t) dt; with f = 1 it
        // is SNR(1) - SNR(0) = 99 - 1/99. Pure importance sampling makes every
        // weight close to that constant; mixing keeps it unbiased.
        let (_, s) = schedule_with(DType::F64, 3, 64);
        let want = 99.0 - 1.0 / 99.0;
        let mut rng = SeededRng::new(4);
        for mix in [0.0, 0.2] {
            let sample = s.sample_t_importance(20_000, 256, mix, &mut rng).unwrap();
            let ts = host(&sample.t);
            assert!(ts.iter().all(|&t| (0.0..=1.0).contains(&t)));
            let w = (s.snr_prime(&sample.t).unwrap() / &sample.density).unwrap();
            let w = host(&w);
            let mean = w.iter().sum::<f64>() / w.len() as f64;
            // Standard error of the mean weight: 0.25% of `want` at mix 0.2
            // (computed for a linear gamma); 1.2% is about 5 of them.
            assert!(
                (mean - want).abs() / want < 0.012,
                "mix {mix}: mean weight {mean}"
            );
            if mix == 0.0 {
                let spread = w.iter().fold(0f64, |m, &x| m.max((x - want).abs() / want));
                assert!(spread < 0.05, "weights not near-constant: {spread}");
                // Most samples land near the clean end, where SNR' is largest.
                let late = ts.iter().filter(|&&t| t > 0.5).count() as f64 / ts.len() as f64;
                assert!(late > 0.85, "{late}");
            }
        }
        assert!(s.sample_t_importance(4, 0, 0.0, &mut rng).is_err());
        assert!(s.sample_t_importance(4, 8, 1.5, &mut rng).is_err());
    }

    #[test]
    fn bad_input_is_an_error() {
        let store = ParamStore::new(SeededRng::new(0));
        let vb = store.var_builder(DType::F32, &Device::Cpu);
        let swapped = LearnedScheduleConfig {
            gamma_0_init: 1.0,
            gamma_1_init: -1.0,
            hidden: 8,
        };
        assert!(LearnedSchedule::new(&swapped, vb.clone()).is_err());
        let (_, s) = schedule(DType::F32, 0);
        let t2 = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(s.evaluate(&t2).is_err());
        assert!(s.snr_prime_grid(1).is_err());
    }
}
