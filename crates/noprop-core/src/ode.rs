//! Fixed-step ODE integrators for CT and FM inference.
//!
//! Solves dz/dt = f(z, t) from t0 to t1 in n equal steps h = (t1 - t0) / n,
//! with z any tensor (typically latents `[B, d]`) and f a caller-supplied
//! vector field `FnMut(&Tensor, f64) -> Result<Tensor>` returning a tensor of
//! z's shape:
//!
//! ```text
//! Euler (order 1): z += h f(z, t)
//! Heun  (order 2): k1 = f(z, t), k2 = f(z + h k1, t + h), z += h (k1 + k2) / 2
//! RK4   (order 4): k1 = f(z, t), k2 = f(z + h/2 k1, t + h/2),
//!                  k3 = f(z + h/2 k2, t + h/2), k4 = f(z + h k3, t + h),
//!                  z += h (k1 + 2 k2 + 2 k3 + k4) / 6
//! ```
//!
//! The global error after integrating over a fixed interval shrinks as h^p
//! (p = 1, 2, 4). Cost per step: 1, 2 and 4 evaluations of f.

use std::str::FromStr;

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

/// The most ODE steps an inference may ask for. The paper uses 1000; the
/// per-step terms of an integration are precomputed (a few hundred values
/// per step), so the bound keeps a mistyped or damaged setting from
/// allocating gigabytes.
pub const MAX_ODE_STEPS: usize = 100_000;

/// Checks an ODE step count (`what` names the setting for the message).
pub fn check_ode_steps(steps: usize, what: &str) -> Result<()> {
    if steps == 0 {
        candle_core::bail!("{what}: inference needs at least one ODE step");
    }
    if steps > MAX_ODE_STEPS {
        candle_core::bail!(
            "{what}: {steps} ODE steps is beyond the supported maximum {MAX_ODE_STEPS}"
        );
    }
    Ok(())
}

/// The fixed-step integrators available for CT and FM inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OdeSolver {
    /// Forward Euler, order 1.
    #[default]
    Euler,
    /// Heun's method (explicit trapezoid), order 2.
    Heun,
    /// Classic fourth-order Runge-Kutta.
    Rk4,
}

impl OdeSolver {
    /// The name used in configs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Euler => "euler",
            Self::Heun => "heun",
            Self::Rk4 => "rk4",
        }
    }

    /// Order of convergence p (global error O(h^p)).
    pub fn order(self) -> usize {
        match self {
            Self::Euler => 1,
            Self::Heun => 2,
            Self::Rk4 => 4,
        }
    }

    /// Vector-field evaluations per step.
    pub fn evaluations_per_step(self) -> usize {
        match self {
            Self::Euler => 1,
            Self::Heun => 2,
            Self::Rk4 => 4,
        }
    }

    /// One step of size `h` from (z, t).
    pub fn step<F>(self, z: &Tensor, t: f64, h: f64, field: &mut F) -> Result<Tensor>
    where
        F: FnMut(&Tensor, f64) -> Result<Tensor>,
    {
        match self {
            Self::Euler => z + (field(z, t)? * h)?,
            Self::Heun => {
                let k1 = field(z, t)?;
                let k2 = field(&(z + (&k1 * h)?)?, t + h)?;
                z + ((k1 + k2)? * (h / 2.0))?
            }
            Self::Rk4 => {
                let k1 = field(z, t)?;
                let k2 = field(&(z + (&k1 * (h / 2.0))?)?, t + h / 2.0)?;
                let k3 = field(&(z + (&k2 * (h / 2.0))?)?, t + h / 2.0)?;
                let k4 = field(&(z + (&k3 * h)?)?, t + h)?;
                let sum = (k1 + (k2 * 2.0)? + (k3 * 2.0)? + k4)?;
                z + (sum * (h / 6.0))?
            }
        }
    }

    /// Integrates dz/dt = field(z, t) from `t0` to `t1` (either direction) in
    /// `steps` >= 1 equal steps, starting at `z0`. Times are computed as
    /// t0 + i h, so they do not drift over many steps.
    pub fn integrate<F>(
        self,
        z0: &Tensor,
        t0: f64,
        t1: f64,
        steps: usize,
        mut field: F,
    ) -> Result<Tensor>
    where
        F: FnMut(&Tensor, f64) -> Result<Tensor>,
    {
        if steps == 0 {
            candle_core::bail!("ode: the number of steps must be at least 1");
        }
        if !(t0.is_finite() && t1.is_finite()) {
            candle_core::bail!("ode: the interval [{t0}, {t1}] must be finite");
        }
        let h = (t1 - t0) / steps as f64;
        let mut z = z0.clone();
        for i in 0..steps {
            let t = t0 + i as f64 * h;
            let next = self.step(&z, t, h, &mut field)?;
            if next.dims() != z0.dims() {
                candle_core::bail!(
                    "ode: the vector field returned shape {:?} for z of shape {:?}",
                    next.dims(),
                    z0.dims()
                );
            }
            z = next;
        }
        Ok(z)
    }
}

impl std::fmt::Display for OdeSolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OdeSolver {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "euler" => Ok(Self::Euler),
            "heun" => Ok(Self::Heun),
            "rk4" => Ok(Self::Rk4),
            other => Err(format!(
                "unknown ODE solver `{other}` (expected euler, heun or rk4)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// |z(1) - e^{-1}| for dz/dt = -z, z(0) = 1, in `steps` steps (f64).
    fn decay_error(solver: OdeSolver, steps: usize) -> f64 {
        let z0 = Tensor::new(&[1.0f64], &Device::Cpu).unwrap();
        let z1 = solver
            .integrate(&z0, 0.0, 1.0, steps, |z, _t| z.neg())
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()[0];
        (z1 - (-1f64).exp()).abs()
    }

    #[test]
    fn orders_of_convergence_on_exponential_decay() {
        // Halving h divides the global error by 2^p; the observed ratio
        // approaches it as h -> 0 (checked within 10% at these step counts).
        for solver in [OdeSolver::Euler, OdeSolver::Heun, OdeSolver::Rk4] {
            let p = solver.order() as f64;
            for steps in [20, 40] {
                let ratio = decay_error(solver, steps) / decay_error(solver, 2 * steps);
                let observed = ratio.log2();
                assert!(
                    (observed - p).abs() < 0.1 * p,
                    "{solver}: order {observed} at n={steps}"
                );
            }
        }
    }

    #[test]
    fn one_euler_and_heun_step_by_hand() {
        // dz/dt = t z from (z, t) = (2, 1) with h = 0.5:
        // Euler 2 + 0.5 * 2 = 3; Heun k1 = 2, k2 = 1.5 * 3 = 4.5, z = 2 + 0.25 * 6.5.
        let z = Tensor::new(&[2.0f64], &Device::Cpu).unwrap();
        let mut f = |z: &Tensor, t: f64| z * t;
        let e = OdeSolver::Euler
            .step(&z, 1.0, 0.5, &mut f)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let h = OdeSolver::Heun
            .step(&z, 1.0, 0.5, &mut f)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        assert_eq!(e[0], 3.0);
        assert_eq!(h[0], 2.0 + 0.25 * 6.5);
    }

    #[test]
    fn bad_input_and_parsing() {
        let z = Tensor::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
        assert!(OdeSolver::Euler
            .integrate(&z, 0.0, 1.0, 0, |z, _| Ok(z.clone()))
            .is_err());
        let wrong_shape = OdeSolver::Heun.integrate(&z, 0.0, 1.0, 3, |z, _| z.sum_keepdim(0));
        assert!(wrong_shape.is_err());
        assert_eq!("RK4".parse::<OdeSolver>().unwrap(), OdeSolver::Rk4);
        assert!("midpoint".parse::<OdeSolver>().is_err());
        assert_eq!(OdeSolver::Heun.to_string(), "heun");
    }
}
