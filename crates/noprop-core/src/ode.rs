//! ODE steppers for CT and FM inference.

use serde::{Deserialize, Serialize};

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
