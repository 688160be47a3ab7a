//! A parameter store with seeded initialisation and a stable order.
//!
//! [`ParamStore`] plays the role of candle's `VarMap` with two differences
//! that matter for reproducibility: variables are initialised from our
//! [`SeededRng`] (candle's CPU generator cannot be seeded), and they are kept
//! in a `BTreeMap`, so every listing is sorted by name (a `VarMap`'s order
//! changes between processes).
//!
//! Build modules as usual with a `VarBuilder` from
//! [`ParamStore::var_builder`]; the initialisation hints of candle-nn
//! (`Init::Kaiming`, `Init::Uniform`, ...) are honoured, drawn from the seeded
//! stream in construction order.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use crate::rng::SeededRng;

/// Named variables, sorted by name, initialised from a seeded generator.
#[derive(Clone)]
pub struct ParamStore {
    vars: Arc<Mutex<BTreeMap<String, Var>>>,
    rng: Arc<Mutex<SeededRng>>,
    /// Values the store may still create (`None`: no bound), see
    /// [`ParamStore::with_max_values`].
    room: Option<Arc<Mutex<ValueBudget>>>,
}

/// A bound on the values a store creates.
#[derive(Debug)]
struct ValueBudget {
    max: usize,
    used: usize,
}

impl std::fmt::Debug for ParamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParamStore")
            .field("names", &self.names())
            .finish()
    }
}

/// Names ending in one of these are buffers (BatchNorm running statistics),
/// saved in checkpoints but never given to an optimizer.
pub const BUFFER_SUFFIXES: [&str; 2] = ["running_mean", "running_var"];

/// Whether `name` is a buffer rather than a trainable parameter.
pub fn is_buffer(name: &str) -> bool {
    BUFFER_SUFFIXES.iter().any(|s| name.ends_with(s))
}

impl ParamStore {
    /// An empty store whose initial values are drawn from `rng`.
    pub fn new(rng: SeededRng) -> Self {
        Self {
            vars: Arc::new(Mutex::new(BTreeMap::new())),
            rng: Arc::new(Mutex::new(rng)),
            room: None,
        }
    }

    /// The same store, refusing to create more than `max_values` values in
    /// all (every variable's element count summed). A model about to be
    /// loaded from a file is bounded by the file's own tensors: a damaged
    /// configuration that asks for a huge layer is then an error before
    /// anything is allocated, not an abort.
    pub fn with_max_values(mut self, max_values: usize) -> Self {
        self.room = Some(Arc::new(Mutex::new(ValueBudget {
            max: max_values,
            used: 0,
        })));
        self
    }

    /// Fails if a variable `name` of `values` elements would not fit the
    /// bound of [`ParamStore::with_max_values`]; takes nothing. For values
    /// built outside the store before [`ParamStore::insert`].
    pub fn check_room(&self, name: &str, values: usize) -> Result<()> {
        self.room_for(name, values, false)
    }

    fn take_room(&self, name: &str, values: usize) -> Result<()> {
        self.room_for(name, values, true)
    }

    fn room_for(&self, name: &str, values: usize, take: bool) -> Result<()> {
        let Some(room) = &self.room else {
            return Ok(());
        };
        let mut budget = room.lock().unwrap();
        if values > budget.max - budget.used {
            candle_core::bail!(
                "variable `{name}` needs {values} values, beyond the {} the model may hold ({} already made): its configuration does not match the tensors it is loaded from",
                budget.max,
                budget.used
            );
        }
        if take {
            budget.used += values;
        }
        Ok(())
    }

    /// A `VarBuilder` creating (or reusing) variables in this store.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    /// All names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.vars.lock().unwrap().keys().cloned().collect()
    }

    /// All variables (parameters and buffers), sorted by name.
    pub fn all_vars(&self) -> Vec<(String, Var)> {
        let vars = self.vars.lock().unwrap();
        vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Trainable variables whose name starts with `prefix` (use `""` for
    /// all), sorted by name; buffers excluded.
    pub fn trainable(&self, prefix: &str) -> Vec<(String, Var)> {
        self.all_vars()
            .into_iter()
            .filter(|(n, _)| n.starts_with(prefix) && !is_buffer(n))
            .collect()
    }

    /// Number of trainable scalars whose name starts with `prefix`.
    pub fn count_trainable(&self, prefix: &str) -> usize {
        self.trainable(prefix)
            .iter()
            .map(|(_, v)| v.as_tensor().elem_count())
            .sum()
    }

    /// The variable called `name`, if any.
    pub fn get(&self, name: &str) -> Option<Var> {
        self.vars.lock().unwrap().get(name).cloned()
    }

    /// Every variable's current value (a detached copy of the handle).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.all_vars()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().detach()))
            .collect()
    }

    /// Sets every variable of the store from `tensors`. Every variable must be
    /// present with the same shape; extra names are an error too, so a
    /// checkpoint of another model is refused rather than half-loaded.
    pub fn load(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let vars = self.vars.lock().unwrap();
        for (name, var) in vars.iter() {
            let t = tensors
                .get(name)
                .ok_or_else(|| candle_core::Error::Msg(format!("missing tensor `{name}`")))?;
            if t.dims() != var.dims() {
                candle_core::bail!(
                    "tensor `{name}` has shape {:?}, the model expects {:?}",
                    t.dims(),
                    var.dims()
                );
            }
            // Another float precision converts; integers are not weights.
            if t.dtype().is_float() != var.dtype().is_float() {
                candle_core::bail!(
                    "tensor `{name}` has dtype {:?}, the model expects {:?}",
                    t.dtype(),
                    var.dtype()
                );
            }
        }
        if let Some(extra) = tensors.keys().find(|k| !vars.contains_key(*k)) {
            candle_core::bail!("unexpected tensor `{extra}`");
        }
        for (name, var) in vars.iter() {
            let t = &tensors[name];
            var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
        }
        Ok(())
    }

    fn init_tensor(&self, shape: &Shape, init: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let n = shape.elem_count();
        let mut rng = self.rng.lock().unwrap();
        let data: Vec<f32> = match init {
            Init::Const(c) => vec![c as f32; n],
            Init::Uniform { lo, up } => rng.uniform_vec(n, lo as f32, up as f32),
            Init::Randn { mean, stdev } => rng
                .normal_vec(n)
                .into_iter()
                .map(|x| mean as f32 + stdev as f32 * x)
                .collect(),
            Init::Kaiming {
                dist,
                fan,
                non_linearity,
            } => {
                let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
                match dist {
                    candle_nn::init::NormalOrUniform::Uniform => {
                        let b = (3f64.sqrt() * std) as f32;
                        rng.uniform_vec(n, -b, b)
                    }
                    candle_nn::init::NormalOrUniform::Normal => rng
                        .normal_vec(n)
                        .into_iter()
                        .map(|x| std as f32 * x)
                        .collect(),
                }
            }
        };
        Tensor::from_vec(data, shape.clone(), dev)?.to_dtype(dtype)
    }

    /// Creates a variable from an explicit value (for example an orthogonal
    /// or prototype class embedding). Fails if the name exists.
    pub fn insert(&self, name: &str, value: &Tensor) -> Result<Var> {
        let mut vars = self.vars.lock().unwrap();
        if vars.contains_key(name) {
            candle_core::bail!("variable `{name}` already exists");
        }
        self.take_room(name, value.elem_count())?;
        let var = Var::from_tensor(value)?;
        vars.insert(name.to_string(), var.clone());
        Ok(var)
    }
}

impl SimpleBackend for ParamStore {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        if let Some(v) = self.vars.lock().unwrap().get(name) {
            if v.shape() != &s {
                candle_core::bail!(
                    "variable `{name}` has shape {:?}, requested {:?}",
                    v.dims(),
                    s.dims()
                );
            }
            return Ok(v.as_tensor().clone());
        }
        self.take_room(name, s.elem_count())?;
        let value = self.init_tensor(&s, h, dtype, dev)?;
        let var = Var::from_tensor(&value)?;
        self.vars
            .lock()
            .unwrap()
            .insert(name.to_string(), var.clone());
        Ok(var.as_tensor().clone())
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        match self.vars.lock().unwrap().get(name) {
            Some(v) => Ok(v.as_tensor().clone()),
            None => candle_core::bail!("no variable `{name}`"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.vars.lock().unwrap().contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(seed: u64) -> ParamStore {
        let store = ParamStore::new(SeededRng::new(seed));
        let vb = store.var_builder(DType::F32, &Device::Cpu);
        candle_nn::linear(8, 4, vb.pp("b")).unwrap();
        candle_nn::linear(4, 2, vb.pp("a")).unwrap();
        candle_nn::batch_norm(4, 1e-5, vb.pp("bn")).unwrap();
        store
    }

    #[test]
    fn a_bounded_store_refuses_variables_beyond_its_values() {
        // linear(8, 4) + linear(4, 2) = 36 + 10 values, batch_norm(4) 16.
        let exact = ParamStore::new(SeededRng::new(0)).with_max_values(62);
        let vb = exact.var_builder(DType::F32, &Device::Cpu);
        candle_nn::linear(8, 4, vb.pp("b")).unwrap();
        candle_nn::linear(4, 2, vb.pp("a")).unwrap();
        candle_nn::batch_norm(4, 1e-5, vb.pp("bn")).unwrap();
        // Reusing a variable takes no more room.
        candle_nn::linear(4, 2, vb.pp("a")).unwrap();

        let short = ParamStore::new(SeededRng::new(0)).with_max_values(40);
        let vb = short.var_builder(DType::F32, &Device::Cpu);
        candle_nn::linear(8, 4, vb.pp("b")).unwrap();
        let e = candle_nn::linear(4, 2, vb.pp("a")).unwrap_err().to_string();
        assert!(
            e.contains("`a.weight` needs 8 values") && e.contains("36 already"),
            "{e}"
        );
        // A huge request fails before allocating (a 4e12-value tensor).
        let e = candle_nn::linear(2_000_000, 2_000_000, vb.pp("huge"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("huge.weight"), "{e}");
        let big = Tensor::zeros(5, DType::F32, &Device::Cpu).unwrap();
        assert!(short.insert("w", &big).is_err());
        assert!(short.check_room("w", 4).is_ok());
        short.insert("w", &big.narrow(0, 0, 4).unwrap()).unwrap();
        assert!(short.check_room("v", 1).is_err());
    }

    #[test]
    fn seeded_init_is_bitwise_reproducible_and_sorted() {
        let (a, b) = (build(3), build(3));
        let names = a.names();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        for ((na, ta), (nb, tb)) in a.named_tensors().iter().zip(b.named_tensors().iter()) {
            assert_eq!(na, nb);
            let (va, vb) = (
                ta.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                tb.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            assert_eq!(va, vb);
        }
        let w3 = build(3).get("a.weight").unwrap().flatten_all().unwrap();
        let w4 = build(4).get("a.weight").unwrap().flatten_all().unwrap();
        assert_ne!(w3.to_vec1::<f32>().unwrap(), w4.to_vec1::<f32>().unwrap());
    }

    #[test]
    fn buffers_are_not_trainable() {
        let s = build(0);
        assert!(s.names().iter().any(|n| n == "bn.running_mean"));
        assert!(s.trainable("").iter().all(|(n, _)| !is_buffer(n)));
        assert_eq!(s.count_trainable("a."), 4 * 2 + 2);
    }

    #[test]
    fn load_refuses_wrong_shapes_and_names() {
        let s = build(0);
        let mut map: HashMap<String, Tensor> = build(1).named_tensors().into_iter().collect();
        s.load(&map).unwrap();
        assert_eq!(
            s.get("a.weight")
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            map["a.weight"]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        );
        map.insert(
            "a.weight".into(),
            Tensor::zeros((3, 3), DType::F32, &Device::Cpu).unwrap(),
        );
        assert!(s.load(&map).is_err());
        // Integers in place of weights, with the right shape.
        map.insert(
            "a.weight".into(),
            Tensor::zeros((2, 4), DType::U8, &Device::Cpu).unwrap(),
        );
        let e = s.load(&map).unwrap_err().to_string();
        assert!(e.contains("`a.weight` has dtype U8"), "{e}");
        // Another float precision is converted.
        map.insert(
            "a.weight".into(),
            Tensor::zeros((2, 4), DType::F64, &Device::Cpu).unwrap(),
        );
        s.load(&map).unwrap();
    }
}
