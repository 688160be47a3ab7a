//! The fixed cosine noise schedule of NoProp-DT.
//!
//! # Definition
//!
//! Improved DDPM (Nichol & Dhariwal 2021) uses, with DDPM indexing (s = 0
//! clean, s = T noisy) and offset o = 0.008,
//!
//! ```text
//! f(s) = cos^2( (s/T + o) / (1 + o) * pi/2 ),   alpha_bar_ddpm(s) = f(s) / f(0).
//! ```
//!
//! NoProp runs time the other way (z_0 noise, z_T clean), so here
//!
//! ```text
//! alpha_bar_t = clamp( f(T - t) / f(0), alpha_bar_min, alpha_bar_max ),   t = 0..=T,
//! ```
//!
//! which increases with t. Without the clamp alpha_bar_T = 1 and SNR(T) is
//! infinite; `alpha_bar_max` (default 0.9999) sets SNR(T) = 9999. It matters:
//! with T = 10 the last DT block's loss weight (T/2) eta (SNR(T) - SNR(T-1)) is
//! about 5,000 against at most 13 for the other blocks. The noise end is
//! alpha_bar_0 = f(T)/f(0) ~ 4e-33 (cos(pi/2) in floating point), raised to
//! `alpha_bar_min` (default 0, i.e. unclipped); it enters the KL term
//! through [`CosineSchedule::alpha_bar_noise_end`].
//!
//! # Derived quantities (t is always the block / latent index)
//!
//! - SNR(t) = alpha_bar_t / (1 - alpha_bar_t), t in 0..=T, increasing.
//! - SNR delta(t) = SNR(t) - SNR(t-1) > 0, t in 1..=T: the weight of block t's
//!   denoising loss (times T eta / 2, see [`CosineSchedule::loss_weight`]).
//! - alpha_t: the paper writes alpha_bar_t = prod_{s=t..T} alpha_s, hence
//!   alpha_t = alpha_bar_t / alpha_bar_{t+1} for t < T and alpha_T =
//!   alpha_bar_T. In Eq. 3 the factor alpha_{t-1} = alpha_bar_{t-1} /
//!   alpha_bar_t is therefore [`CosineSchedule::alpha`]`(t - 1)`.
//! - Posterior (Eq. 3), t in 1..=T: the forward (noising) process is
//!   z_{t-1} = sqrt(alpha_{t-1}) z_t + sqrt(1 - alpha_{t-1}) eps, and
//!   q(z_t | z_{t-1}, y) = N(a_t u_y + b_t z_{t-1}, c_t I) with
//!
//! ```text
//! a_t = sqrt(alpha_bar_t) (1 - alpha_{t-1}) / (1 - alpha_bar_{t-1})
//! b_t = sqrt(alpha_{t-1}) (1 - alpha_bar_t) / (1 - alpha_bar_{t-1})
//! c_t = (1 - alpha_bar_t) (1 - alpha_{t-1}) / (1 - alpha_bar_{t-1})
//! ```
//!
//!   It is consistent with the marginals: a_t + b_t sqrt(alpha_bar_{t-1}) =
//!   sqrt(alpha_bar_t) and b_t^2 (1 - alpha_bar_{t-1}) + c_t = 1 - alpha_bar_t.
//!   DT inference replaces u_y by block t's prediction u_hat_t(x, z_{t-1}).
//!
//! Everything here is a host `f64`; multiply tensors by these scalars.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

/// Configuration of a [`CosineSchedule`] (serde: every field optional).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CosineScheduleConfig {
    /// Number of denoising steps (DT blocks) T >= 1.
    pub num_steps: usize,
    /// Clean-end clip: alpha_bar_T, so SNR(T) = alpha_bar_max / (1 - alpha_bar_max).
    pub alpha_bar_max: f64,
    /// Noise-end clip: alpha_bar_t is at least this (0 = unclipped).
    pub alpha_bar_min: f64,
    /// The improved-DDPM offset o (keeps the noise-end slope finite).
    pub offset: f64,
}

impl Default for CosineScheduleConfig {
    fn default() -> Self {
        Self {
            num_steps: 10,
            alpha_bar_max: 0.9999,
            alpha_bar_min: 0.0,
            offset: 0.008,
        }
    }
}

/// The coefficients of q(z_t | z_{t-1}, y) = N(a u_y + b z_{t-1}, c I).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PosteriorCoeffs {
    /// Coefficient a of the clean label u_y.
    pub a: f64,
    /// Coefficient b of the previous latent z_{t-1}.
    pub b: f64,
    /// Variance c of the added noise.
    pub c: f64,
}

/// One row of [`CosineSchedule::table`]; the step quantities are `None` at t = 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRow {
    /// Step (latent) index, 0..=T.
    pub t: usize,
    /// alpha_bar_t.
    pub alpha_bar: f64,
    /// alpha_t (see [`CosineSchedule::alpha`]).
    pub alpha: f64,
    /// SNR(t) = alpha_bar_t / (1 - alpha_bar_t).
    pub snr: f64,
    /// SNR(t) - SNR(t-1); `None` at t = 0.
    pub snr_delta: Option<f64>,
    /// Posterior coefficient a_t (Eq. 3); `None` at t = 0.
    pub a: Option<f64>,
    /// Posterior coefficient b_t (Eq. 3); `None` at t = 0.
    pub b: Option<f64>,
    /// Posterior variance c_t (Eq. 3); `None` at t = 0.
    pub c: Option<f64>,
}

/// The reversed, clipped cosine schedule (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub struct CosineSchedule {
    config: CosineScheduleConfig,
    /// alpha_bar_t for t = 0..=T.
    alpha_bars: Vec<f64>,
}

impl CosineSchedule {
    /// T steps, clean-end clip `alpha_bar_max`, the other settings default.
    pub fn new(num_steps: usize, alpha_bar_max: f64) -> Result<Self> {
        Self::from_config(&CosineScheduleConfig {
            num_steps,
            alpha_bar_max,
            ..Default::default()
        })
    }

    /// Builds and validates the schedule: T >= 1, 0 <= alpha_bar_min <
    /// alpha_bar_max < 1, offset > 0, and alpha_bar strictly increasing after
    /// clipping (a clip that flattens the curve would zero an SNR delta).
    pub fn from_config(config: &CosineScheduleConfig) -> Result<Self> {
        let c = *config;
        if c.num_steps == 0 {
            candle_core::bail!("cosine schedule: num_steps must be at least 1");
        }
        if !(c.alpha_bar_max > 0.0 && c.alpha_bar_max < 1.0) {
            candle_core::bail!(
                "cosine schedule: alpha_bar_max must lie in (0, 1), got {}",
                c.alpha_bar_max
            );
        }
        if !(c.alpha_bar_min >= 0.0 && c.alpha_bar_min < c.alpha_bar_max) {
            candle_core::bail!(
                "cosine schedule: alpha_bar_min must lie in [0, alpha_bar_max = {}), got {}",
                c.alpha_bar_max,
                c.alpha_bar_min
            );
        }
        if !(c.offset > 0.0 && c.offset.is_finite()) {
            candle_core::bail!("cosine schedule: offset must be positive, got {}", c.offset);
        }
        let big_t = c.num_steps as f64;
        let f = |s: f64| {
            let angle = (s / big_t + c.offset) / (1.0 + c.offset) * std::f64::consts::FRAC_PI_2;
            angle.cos().powi(2)
        };
        let f0 = f(0.0);
        let alpha_bars: Vec<f64> = (0..=c.num_steps)
            .map(|t| (f((c.num_steps - t) as f64) / f0).clamp(c.alpha_bar_min, c.alpha_bar_max))
            .collect();
        if let Some(t) = (1..=c.num_steps).find(|&t| alpha_bars[t] <= alpha_bars[t - 1]) {
            candle_core::bail!(
                "cosine schedule: alpha_bar is not increasing at t = {t} ({} then {}): \
                 the clip range [{}, {}] is too narrow for T = {}",
                alpha_bars[t - 1],
                alpha_bars[t],
                c.alpha_bar_min,
                c.alpha_bar_max,
                c.num_steps
            );
        }
        Ok(Self {
            config: c,
            alpha_bars,
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &CosineScheduleConfig {
        &self.config
    }

    /// T.
    pub fn num_steps(&self) -> usize {
        self.config.num_steps
    }

    /// alpha_bar_t for t = 0..=T.
    pub fn alpha_bars(&self) -> &[f64] {
        &self.alpha_bars
    }

    fn check_t(&self, t: usize, lo: usize, what: &str) -> Result<()> {
        if t < lo || t > self.config.num_steps {
            candle_core::bail!(
                "cosine schedule: {what} needs t in {lo}..={}, got {t}",
                self.config.num_steps
            );
        }
        Ok(())
    }

    /// alpha_bar_t, t in 0..=T.
    pub fn alpha_bar(&self, t: usize) -> Result<f64> {
        self.check_t(t, 0, "alpha_bar")?;
        Ok(self.alpha_bars[t])
    }

    /// alpha_bar_0, the noise end (enters the KL term).
    pub fn alpha_bar_noise_end(&self) -> f64 {
        self.alpha_bars[0]
    }

    /// alpha_bar_T, the clean end (the noised label z_T fed to the head).
    pub fn alpha_bar_clean_end(&self) -> f64 {
        self.alpha_bars[self.config.num_steps]
    }

    /// alpha_t = alpha_bar_t / alpha_bar_{t+1} for t < T, alpha_T = alpha_bar_T.
    pub fn alpha(&self, t: usize) -> Result<f64> {
        self.check_t(t, 0, "alpha")?;
        Ok(if t == self.config.num_steps {
            self.alpha_bars[t]
        } else {
            self.alpha_bars[t] / self.alpha_bars[t + 1]
        })
    }

    /// SNR(t) = alpha_bar_t / (1 - alpha_bar_t), t in 0..=T.
    pub fn snr(&self, t: usize) -> Result<f64> {
        let ab = self.alpha_bar(t)?;
        Ok(ab / (1.0 - ab))
    }

    /// SNR(t) - SNR(t-1) > 0, t in 1..=T.
    pub fn snr_delta(&self, t: usize) -> Result<f64> {
        self.check_t(t, 1, "snr_delta")?;
        Ok(self.snr(t)? - self.snr(t - 1)?)
    }

    /// Block t's denoising-loss weight (T/2) eta (SNR(t) - SNR(t-1)) (Eq. 8).
    pub fn loss_weight(&self, t: usize, eta: f64) -> Result<f64> {
        Ok(0.5 * self.config.num_steps as f64 * eta * self.snr_delta(t)?)
    }

    /// The Eq. 3 coefficients of q(z_t | z_{t-1}, y), t in 1..=T.
    pub fn posterior_coeffs(&self, t: usize) -> Result<PosteriorCoeffs> {
        self.check_t(t, 1, "posterior_coeffs")?;
        let ab_t = self.alpha_bars[t];
        let ab_prev = self.alpha_bars[t - 1];
        let alpha_prev = ab_prev / ab_t;
        let one_minus_ab_prev = 1.0 - ab_prev;
        Ok(PosteriorCoeffs {
            a: ab_t.sqrt() * (1.0 - alpha_prev) / one_minus_ab_prev,
            b: alpha_prev.sqrt() * (1.0 - ab_t) / one_minus_ab_prev,
            c: (1.0 - ab_t) * (1.0 - alpha_prev) / one_minus_ab_prev,
        })
    }

    /// One DT inference step (Eq. 3): z_t = a_t u_hat + b_t z_{t-1} + sqrt(c_t) noise,
    /// with `u_hat` and `z_prev` `[B, d]`; `noise` `None` is the deterministic
    /// (noise-free) variant.
    pub fn posterior_step(
        &self,
        t: usize,
        u_hat: &Tensor,
        z_prev: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let PosteriorCoeffs { a, b, c } = self.posterior_coeffs(t)?;
        let mean = ((u_hat * a)? + (z_prev * b)?)?;
        match noise {
            Some(eps) => mean + (eps * c.sqrt())?,
            None => Ok(mean),
        }
    }

    /// Every t with its quantities (for `noprop info` and reports).
    pub fn table(&self) -> Vec<ScheduleRow> {
        (0..=self.config.num_steps)
            .map(|t| {
                let ab = self.alpha_bars[t];
                let step = (t >= 1).then(|| self.posterior_coeffs(t).ok()).flatten();
                ScheduleRow {
                    t,
                    alpha_bar: ab,
                    alpha: self.alpha(t).unwrap_or(f64::NAN),
                    snr: ab / (1.0 - ab),
                    snr_delta: (t >= 1).then(|| self.snr_delta(t).ok()).flatten(),
                    a: step.map(|p| p.a),
                    b: step.map(|p| p.b),
                    c: step.map(|p| p.c),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeededRng;

    #[test]
    fn snr_deltas_positive_and_alpha_bar_increasing() {
        for num_steps in [1, 2, 10, 50] {
            let s = CosineSchedule::new(num_steps, 0.9999).unwrap();
            for t in 1..=num_steps {
                assert!(s.alpha_bar(t).unwrap() > s.alpha_bar(t - 1).unwrap());
                let delta = s.snr_delta(t).unwrap();
                assert!(delta > 0.0, "T={num_steps} t={t} delta={delta}");
            }
            assert_eq!(s.alpha_bar_clean_end(), 0.9999);
            assert!(s.alpha_bar_noise_end() < 1e-30);
        }
    }

    #[test]
    fn matches_the_reversed_improved_ddpm_formula() {
        // Hand evaluation for T = 10, o = 0.008: f(s) = cos^2((s/10 + o)/(1 + o) pi/2).
        let f = |s: f64| {
            ((s / 10.0 + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                .cos()
                .powi(2)
        };
        let s = CosineSchedule::new(10, 0.9999).unwrap();
        assert!((s.alpha_bar(9).unwrap() - f(1.0) / f(0.0)).abs() < 1e-15);
        assert!((s.alpha_bar(8).unwrap() - 0.898_71).abs() < 1e-4);
        // The spec's figures: last block weight ~5,000, others at most ~13.
        let w10 = s.loss_weight(10, 0.1).unwrap();
        assert!((w10 - 4982.0).abs() < 2.0, "{w10}");
        let others = (1..10)
            .map(|t| s.loss_weight(t, 0.1).unwrap())
            .fold(0.0, f64::max);
        assert!((others - 12.96).abs() < 0.05, "{others}");
        // alpha by definition: alpha_bar_t = prod_{s=t..T} alpha_s.
        for t in 0..=10 {
            let prod: f64 = (t..=10).map(|u| s.alpha(u).unwrap()).product();
            assert!((prod - s.alpha_bar(t).unwrap()).abs() < 1e-12);
        }
    }

    #[test]
    fn posterior_consistent_with_marginals_in_closed_form() {
        let s = CosineSchedule::new(10, 0.9999).unwrap();
        for t in 1..=10 {
            let PosteriorCoeffs { a, b, c } = s.posterior_coeffs(t).unwrap();
            let (ab, ab_prev) = (s.alpha_bar(t).unwrap(), s.alpha_bar(t - 1).unwrap());
            assert!((a + b * ab_prev.sqrt() - ab.sqrt()).abs() < 1e-12);
            // Gaussian conditioning of the forward joint: with
            // z_{t-1} = sqrt(alpha) z_t + sqrt(1 - alpha) eps,
            // Var(z_t | z_{t-1}) = Var(z_t) - Cov^2 / Var(z_{t-1}),
            // Cov = sqrt(alpha) (1 - ab_t).
            let alpha = ab_prev / ab;
            let cov = alpha.sqrt() * (1.0 - ab);
            let cond_var = (1.0 - ab) - cov * cov / (1.0 - ab_prev);
            assert!((c - cond_var).abs() < 1e-12, "t={t}: c={c} vs {cond_var}");
            assert!((b - cov / (1.0 - ab_prev)).abs() < 1e-12);
        }
    }

    #[test]
    fn posterior_moments_by_sampling() {
        // Sample z_{t-1} ~ q(z_{t-1} | y), then z_t from the posterior; the
        // pair must have the forward process' joint moments: mean and variance
        // of q(z_t | y) and Cov(z_{t-1}, z_t) = sqrt(alpha_{t-1}) (1 - alpha_bar_t).
        let s = CosineSchedule::new(10, 0.9999).unwrap();
        let mut rng = SeededRng::new(11);
        let u = 0.7; // one coordinate of u_y
        let n = 100_000;
        for t in 1..=10 {
            let PosteriorCoeffs { a, b, c } = s.posterior_coeffs(t).unwrap();
            let (ab, ab_prev) = (s.alpha_bar(t).unwrap(), s.alpha_bar(t - 1).unwrap());
            let (mut sum, mut sum_sq, mut sum_cross, mut sum_prev) = (0.0, 0.0, 0.0, 0.0);
            for _ in 0..n {
                let z_prev = ab_prev.sqrt() * u + (1.0 - ab_prev).sqrt() * rng.normal_f32() as f64;
                let z = a * u + b * z_prev + c.sqrt() * rng.normal_f32() as f64;
                sum += z;
                sum_sq += z * z;
                sum_prev += z_prev;
                sum_cross += z * z_prev;
            }
            let nf = n as f64;
            let mean = sum / nf;
            let var = sum_sq / nf - mean * mean;
            let cov = sum_cross / nf - mean * (sum_prev / nf);
            let sd = (1.0 - ab).sqrt();
            // 5 standard errors: the mean's is sd/sqrt(n), the variance's sd^2 sqrt(2/n).
            assert!(
                (mean - ab.sqrt() * u).abs() < 5.0 * sd / nf.sqrt(),
                "t={t} mean {mean}"
            );
            assert!(
                (var - (1.0 - ab)).abs() < 5.0 * sd * sd * (2.0 / nf).sqrt(),
                "t={t} var {var} vs {}",
                1.0 - ab
            );
            let want_cov = (ab_prev / ab).sqrt() * (1.0 - ab);
            let cov_se = (sd * sd * (1.0 - ab_prev) + want_cov * want_cov).sqrt() / nf.sqrt();
            assert!(
                (cov - want_cov).abs() < 5.0 * cov_se,
                "t={t} cov {cov} vs {want_cov}"
            );
        }
    }

    #[test]
    fn bad_configurations_are_errors() {
        assert!(CosineSchedule::new(0, 0.9999).is_err());
        assert!(CosineSchedule::new(10, 1.0).is_err());
        assert!(CosineSchedule::new(10, 0.0).is_err());
        // With T = 1000 the cosine reaches 0.99996 at t = T-1: clip 0.9999 would flatten it.
        let err = CosineSchedule::new(1000, 0.9999).unwrap_err().to_string();
        assert!(err.contains("not increasing"), "{err}");
        let s = CosineSchedule::new(10, 0.9999).unwrap();
        assert!(s.alpha_bar(11).is_err());
        assert!(s.snr_delta(0).is_err());
        assert!(s.posterior_coeffs(0).is_err());
        let cfg: CosineScheduleConfig = serde_json::from_str(r#"{"num_steps": 4}"#).unwrap();
        assert_eq!(cfg.alpha_bar_max, 0.9999);
        assert!(serde_json::from_str::<CosineScheduleConfig>(r#"{"steps": 4}"#).is_err());
    }

    #[test]
    fn table_and_posterior_step() {
        let s = CosineSchedule::new(3, 0.999).unwrap();
        let rows = s.table();
        assert_eq!(rows.len(), 4);
        assert!(rows[0].a.is_none() && rows[0].snr_delta.is_none());
        assert_eq!(rows[2].b, Some(s.posterior_coeffs(2).unwrap().b));
        let dev = candle_core::Device::Cpu;
        let u = Tensor::new(&[[1f32, 0.0]], &dev).unwrap();
        let z = Tensor::new(&[[0.5f32, -0.5]], &dev).unwrap();
        let eps = Tensor::new(&[[2f32, 1.0]], &dev).unwrap();
        let p = s.posterior_coeffs(2).unwrap();
        let out = s
            .posterior_step(2, &u, &z, Some(&eps))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let want0 = p.a + p.b * 0.5 + p.c.sqrt() * 2.0;
        let want1 = -p.b * 0.5 + p.c.sqrt();
        assert!((out[0][0] as f64 - want0).abs() < 1e-6);
        assert!((out[0][1] as f64 - want1).abs() < 1e-6);
    }
}
