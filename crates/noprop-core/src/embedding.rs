//! Class embeddings W [m, d]: row y is u_y, the clean target of class y.
//!
//! Three kinds (spec, "Class embeddings W"):
//!
//! - **one-hot** (`"one-hot"`): W = I_m, d = m, fixed. A plain tensor, not a
//!   variable: it is in no `ParamStore`, no optimizer sees it, no checkpoint
//!   holds it.
//! - **learned, d = k** (`"dim20"`, `"dimK"`): a variable initialised
//!   orthogonally: from a Gaussian matrix G [m, k] drawn row-major from the
//!   seeded generator, modified Gram-Schmidt orthonormalises the rows when
//!   k >= m (so W W^T = I_m: every u_y has unit norm and they are mutually
//!   orthogonal) and the columns when k < m (W^T W = I_k; rows then have
//!   norm sqrt(k/m) on average). This is QR with a positive-diagonal R, the
//!   same distribution as `torch.nn.init.orthogonal_` (gain 1).
//! - **prototype** (`"prototype"`): a variable with d = image size (C H W,
//!   784 for MNIST); row c starts as the training image of class c whose
//!   median Euclidean distance to the other images of class c is smallest
//!   (ties: the earliest image). Pass the training images exactly as the
//!   model sees them (normalised). The median of an even count is the mean
//!   of the two middle values. Distances are computed per class in row
//!   chunks of at most [`PROTOTYPE_CHUNK_ELEMENTS`] distances, so 6,000
//!   MNIST images of a class need ~16 MB at a time, not 144 MB.
//!
//! Learned embeddings live in the `ParamStore` under [`EMBEDDING_WEIGHT`]
//! ("embedding.weight", shape [m, d]).

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device, Result, Tensor, Var, D};
use serde::{Deserialize, Serialize};

use crate::params::ParamStore;
use crate::rng::SeededRng;
use crate::stats::median;
use crate::variant::ModelInit;

/// The `ParamStore` name of a learned W.
pub const EMBEDDING_WEIGHT: &str = "embedding.weight";

/// Most pairwise distances held at once by the prototype picker.
pub const PROTOTYPE_CHUNK_ELEMENTS: usize = 4 << 20;

/// Which class embedding a model uses. Serialised as its string form
/// ("one-hot", "dim20", "prototype").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum EmbeddingKind {
    /// W = I, fixed.
    OneHot,
    /// Learned, d = `dim`, orthogonal initialisation.
    Learned {
        /// The embedding dimension d.
        dim: usize,
    },
    /// Learned, d = image size, initialised with class prototypes.
    Prototype,
}

impl fmt::Display for EmbeddingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OneHot => f.write_str("one-hot"),
            Self::Learned { dim } => write!(f, "dim{dim}"),
            Self::Prototype => f.write_str("prototype"),
        }
    }
}

impl FromStr for EmbeddingKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "one-hot" | "onehot" | "one_hot" => Ok(Self::OneHot),
            "prototype" => Ok(Self::Prototype),
            _ => match lower.strip_prefix("dim").map(str::parse::<usize>) {
                Some(Ok(dim)) if dim > 0 => Ok(Self::Learned { dim }),
                _ => Err(format!(
                    "unknown embedding `{s}` (expected one-hot, prototype or dimN with N >= 1, e.g. dim20)"
                )),
            },
        }
    }
}

impl TryFrom<String> for EmbeddingKind {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<EmbeddingKind> for String {
    fn from(k: EmbeddingKind) -> String {
        k.to_string()
    }
}

impl EmbeddingKind {
    /// Whether W is a trainable variable.
    pub fn is_learned(self) -> bool {
        !matches!(self, Self::OneHot)
    }

    /// d for `num_classes` classes and images of `image_dim` = C H W values.
    pub fn dim(self, num_classes: usize, image_dim: usize) -> usize {
        match self {
            Self::OneHot => num_classes,
            Self::Learned { dim } => dim,
            Self::Prototype => image_dim,
        }
    }
}

/// The class embedding matrix W [m, d] of a model.
#[derive(Debug, Clone)]
pub struct ClassEmbedding {
    kind: EmbeddingKind,
    weight: Tensor,
    var: Option<Var>,
}

impl ClassEmbedding {
    /// Builds W (f32, on `device`). Learned kinds are inserted into `store`
    /// under [`EMBEDDING_WEIGHT`] (an error if the name exists). `rng` is used
    /// by the orthogonal initialisation only. `prototype_source` (training
    /// images `[N, ...]`, labels `[N]` of any integer dtype) is required for
    /// the prototype kind and ignored otherwise.
    pub fn new(
        kind: EmbeddingKind,
        num_classes: usize,
        store: &ParamStore,
        rng: &mut SeededRng,
        prototype_source: Option<(&Tensor, &Tensor)>,
        device: &Device,
    ) -> Result<Self> {
        if num_classes == 0 {
            candle_core::bail!("class embedding: num_classes must be at least 1");
        }
        let value = match kind {
            EmbeddingKind::OneHot => {
                let eye = Tensor::eye(num_classes, DType::F32, device)?;
                return Ok(Self {
                    kind,
                    weight: eye,
                    var: None,
                });
            }
            EmbeddingKind::Learned { dim } => {
                if dim == 0 {
                    candle_core::bail!("class embedding: a learned embedding needs dim >= 1");
                }
                let w = orthogonal(num_classes, dim, rng);
                Tensor::from_vec(w, (num_classes, dim), device)?
            }
            EmbeddingKind::Prototype => {
                let Some((images, labels)) = prototype_source else {
                    candle_core::bail!(
                        "class embedding: prototype embeddings need the training images and labels"
                    );
                };
                let picks = prototype_indices(images, labels, num_classes)?;
                let flat = images.flatten_from(1)?.to_dtype(DType::F32)?;
                let idx = Tensor::from_vec(
                    picks.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                    num_classes,
                    flat.device(),
                )?;
                flat.index_select(&idx, 0)?.to_device(device)?
            }
        };
        Self::insert(kind, store, &value)
    }

    /// W as a model's [`ModelInit`] asks: [`ClassEmbedding::new`] for
    /// training (prototypes from the init, `rng` for the orthogonal start),
    /// [`ClassEmbedding::for_loading`] for a checkpoint to be loaded into.
    pub fn for_init(
        kind: EmbeddingKind,
        num_classes: usize,
        image_dim: usize,
        store: &ParamStore,
        init: ModelInit<'_>,
        rng: &mut SeededRng,
        device: &Device,
    ) -> Result<Self> {
        match init {
            ModelInit::ForLoading | ModelInit::ForLoadingAtMost { .. } => {
                Self::for_loading(kind, num_classes, image_dim, store, device)
            }
            ModelInit::Train { prototypes, .. } => {
                let embedding = Self::new(kind, num_classes, store, rng, prototypes, device)?;
                // Prototypes are images: they must be the model's images.
                if kind == EmbeddingKind::Prototype && embedding.dim() != image_dim {
                    candle_core::bail!(
                        "class embedding: prototype images have {} values each, the model expects {image_dim} (C x H x W)",
                        embedding.dim()
                    );
                }
                Ok(embedding)
            }
        }
    }

    /// W with the right name and shape but zero values, for a model about to
    /// be loaded from a checkpoint (no images or random numbers needed).
    /// `image_dim` (C H W) is used by the prototype kind only.
    pub fn for_loading(
        kind: EmbeddingKind,
        num_classes: usize,
        image_dim: usize,
        store: &ParamStore,
        device: &Device,
    ) -> Result<Self> {
        if !kind.is_learned() {
            return Self::new(
                kind,
                num_classes,
                store,
                &mut SeededRng::new(0),
                None,
                device,
            );
        }
        let d = kind.dim(num_classes, image_dim);
        if num_classes == 0 || d == 0 {
            candle_core::bail!(
                "class embedding: need num_classes >= 1 and d >= 1, got {num_classes} and {d}"
            );
        }
        let values = num_classes
            .checked_mul(d)
            .ok_or_else(|| candle_core::Error::Msg("class embedding: m x d overflows".into()))?;
        store.check_room(EMBEDDING_WEIGHT, values)?;
        let zeros = Tensor::zeros((num_classes, d), DType::F32, device)?;
        Self::insert(kind, store, &zeros)
    }

    fn insert(kind: EmbeddingKind, store: &ParamStore, value: &Tensor) -> Result<Self> {
        let var = store.insert(EMBEDDING_WEIGHT, value)?;
        Ok(Self {
            kind,
            weight: var.as_tensor().clone(),
            var: Some(var),
        })
    }

    /// W [m, d]; for learned kinds the variable itself, so gradients reach it.
    pub fn matrix(&self) -> Tensor {
        self.weight.clone()
    }

    /// u_y = W`[labels]` [B, d] for labels `[B]` (u32 or i64).
    pub fn rows(&self, labels: &Tensor) -> Result<Tensor> {
        self.weight.index_select(labels, 0)
    }

    /// Minus the squared Euclidean distance from each row of z [B, d] to
    /// each class embedding, up to a per-row constant: -||w_c||^2 + 2 z.w_c
    /// ([B, m]; ||z||^2 is the same for every class, so it changes neither
    /// the argmax nor a softmax over classes). The FM read-out.
    pub fn neg_sq_distances(&self, z: &Tensor) -> Result<Tensor> {
        let w = self.weight.to_dtype(z.dtype())?;
        if z.rank() != 2 || z.dim(1)? != w.dim(1)? {
            candle_core::bail!(
                "class embedding: z must be [B, {}], got {:?}",
                w.dim(1)?,
                z.dims()
            );
        }
        let cross = z.matmul(&w.t()?)?; // [B, m]
        let w_sq = w.sqr()?.sum(1)?.unsqueeze(0)?; // [1, m]
        (cross * 2.0)?.broadcast_sub(&w_sq)
    }

    /// The class whose embedding is nearest (Euclidean) to each row of z
    /// [B, d]: the FM read-out. Returns `[B]` u32.
    pub fn nearest_class(&self, z: &Tensor) -> Result<Tensor> {
        self.neg_sq_distances(z)?.argmax(D::Minus1)
    }

    /// The kind of embedding this is.
    pub fn kind(&self) -> EmbeddingKind {
        self.kind
    }

    /// m.
    pub fn num_classes(&self) -> usize {
        self.weight.dims()[0]
    }

    /// d.
    pub fn dim(&self) -> usize {
        self.weight.dims()[1]
    }

    /// Whether W is trainable (learned or prototype), i.e. has a [`Var`].
    pub fn is_learned(&self) -> bool {
        self.var.is_some()
    }

    /// The variable of a learned W.
    pub fn var(&self) -> Option<&Var> {
        self.var.as_ref()
    }
}

/// An [m, k] matrix (row-major) with orthonormal rows (k >= m) or columns
/// (k < m), by modified Gram-Schmidt of seeded Gaussian vectors.
pub fn orthogonal(m: usize, k: usize, rng: &mut SeededRng) -> Vec<f32> {
    let g: Vec<f64> = rng.normal_vec(m * k).into_iter().map(f64::from).collect();
    let rows_orthonormal = k >= m;
    // The vectors to orthonormalise: rows of G (length k) or columns (length m).
    let (count, len) = if rows_orthonormal { (m, k) } else { (k, m) };
    let mut vecs: Vec<Vec<f64>> = (0..count)
        .map(|i| {
            (0..len)
                .map(|j| {
                    if rows_orthonormal {
                        g[i * k + j]
                    } else {
                        g[j * k + i]
                    }
                })
                .collect()
        })
        .collect();
    for i in 0..count {
        // Two passes of projection removal keep orthogonality at round-off level.
        for _ in 0..2 {
            for j in 0..i {
                let dot: f64 = vecs[i].iter().zip(&vecs[j]).map(|(a, b)| a * b).sum();
                let (head, tail) = vecs.split_at_mut(i);
                for (a, b) in tail[0].iter_mut().zip(&head[j]) {
                    *a -= dot * b;
                }
            }
        }
        let norm = vecs[i].iter().map(|a| a * a).sum::<f64>().sqrt();
        vecs[i].iter_mut().for_each(|a| *a /= norm);
    }
    let mut w = vec![0f32; m * k];
    for (i, v) in vecs.iter().enumerate() {
        for (j, &x) in v.iter().enumerate() {
            let (r, c) = if rows_orthonormal { (i, j) } else { (j, i) };
            w[r * k + c] = x as f32;
        }
    }
    w
}

/// For each class c in 0..m, the index (into `images`) of the class-c image
/// with the smallest median Euclidean distance to the other class-c images.
pub fn prototype_indices(
    images: &Tensor,
    labels: &Tensor,
    num_classes: usize,
) -> Result<Vec<usize>> {
    if images.rank() < 2 {
        candle_core::bail!(
            "prototype: images must be [N, ...], got shape {:?}",
            images.dims()
        );
    }
    let n = images.dim(0)?;
    if labels.rank() != 1 || labels.dim(0)? != n {
        candle_core::bail!(
            "prototype: labels must be [N] with N = {n} (the number of images), got shape {:?}",
            labels.dims()
        );
    }
    let labels_host: Vec<i64> = labels.to_dtype(DType::I64)?.to_vec1::<i64>()?;
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); num_classes];
    for (i, &y) in labels_host.iter().enumerate() {
        if y < 0 || y as usize >= num_classes {
            candle_core::bail!("prototype: label {y} of image {i} is outside 0..{num_classes}");
        }
        members[y as usize].push(i as u32);
    }
    if let Some(c) = members.iter().position(Vec::is_empty) {
        candle_core::bail!("prototype: class {c} has no training image");
    }
    let flat = images.flatten_from(1)?.to_dtype(DType::F32)?;
    let mut picks = Vec::with_capacity(num_classes);
    for idx in &members {
        let local = class_medoid_by_median(&flat, idx, PROTOTYPE_CHUNK_ELEMENTS)?;
        picks.push(idx[local] as usize);
    }
    Ok(picks)
}

/// The position within `idx` of the row of `flat` [N, D] with the smallest
/// median distance to the other rows listed in `idx`, holding at most
/// `chunk_elements` distances (but at least one row) at a time.
fn class_medoid_by_median(flat: &Tensor, idx: &[u32], chunk_elements: usize) -> Result<usize> {
    let n = idx.len();
    if n <= 2 {
        // One image, or two whose medians are the same distance: the first.
        return Ok(0);
    }
    let x = flat.index_select(&Tensor::new(idx, flat.device())?, 0)?; // [n, D]
    let sq = x.sqr()?.sum(1)?; // [n]
    let chunk = (chunk_elements / n).max(1);
    let mut best = (f64::INFINITY, 0usize);
    let mut others = Vec::with_capacity(n - 1);
    let mut start = 0;
    while start < n {
        let rows = chunk.min(n - start);
        let xc = x.narrow(0, start, rows)?;
        let d2 = sq
            .narrow(0, start, rows)?
            .unsqueeze(1)?
            .broadcast_add(&sq.unsqueeze(0)?)?
            .sub(&(xc.matmul(&x.t()?)? * 2.0)?)?;
        let d = d2.relu()?.sqrt()?.to_vec2::<f32>()?;
        for (r, row) in d.iter().enumerate() {
            let me = start + r;
            others.clear();
            others.extend(
                row.iter()
                    .enumerate()
                    .filter(|&(j, _)| j != me)
                    .map(|(_, &v)| v as f64),
            );
            let med = median(&others);
            if med < best.0 {
                best = (med, me);
            }
        }
        start += rows;
    }
    Ok(best.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host2(t: &Tensor) -> Vec<Vec<f32>> {
        t.to_vec2::<f32>().unwrap()
    }

    #[test]
    fn kinds_parse_display_and_serde() {
        assert_eq!(
            "one-hot".parse::<EmbeddingKind>().unwrap(),
            EmbeddingKind::OneHot
        );
        assert_eq!(
            "dim20".parse::<EmbeddingKind>().unwrap(),
            EmbeddingKind::Learned { dim: 20 }
        );
        assert_eq!(
            "Prototype".parse::<EmbeddingKind>().unwrap(),
            EmbeddingKind::Prototype
        );
        for bad in ["dim0", "dim", "dimx", "two-hot"] {
            assert!(bad.parse::<EmbeddingKind>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&EmbeddingKind::Learned { dim: 7 }).unwrap();
        assert_eq!(json, "\"dim7\"");
        let back: EmbeddingKind = serde_json::from_str(&json).unwrap();
        assert_eq!(back, EmbeddingKind::Learned { dim: 7 });
        assert!(serde_json::from_str::<EmbeddingKind>("\"dim-1\"").is_err());
    }

    #[test]
    fn one_hot_is_a_fixed_identity() {
        let store = ParamStore::new(SeededRng::new(0));
        let mut rng = SeededRng::new(0);
        let e = ClassEmbedding::new(
            EmbeddingKind::OneHot,
            3,
            &store,
            &mut rng,
            None,
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(
            host2(&e.matrix()),
            vec![vec![1., 0., 0.], vec![0., 1., 0.], vec![0., 0., 1.]]
        );
        assert!(!e.is_learned() && store.names().is_empty());
        let labels = Tensor::new(&[2u32, 0], &Device::Cpu).unwrap();
        assert_eq!(
            host2(&e.rows(&labels).unwrap()),
            vec![vec![0., 0., 1.], vec![1., 0., 0.]]
        );
    }

    fn gram(w: &[f32], m: usize, k: usize, rows: bool) -> Vec<Vec<f64>> {
        let n = if rows { m } else { k };
        let at = |v: usize, i: usize| if rows { w[v * k + i] } else { w[i * k + v] } as f64;
        let len = if rows { k } else { m };
        (0..n)
            .map(|a| {
                (0..n)
                    .map(|b| (0..len).map(|i| at(a, i) * at(b, i)).sum())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn orthogonal_rows_or_columns() {
        let mut rng = SeededRng::new(3);
        for (m, k) in [(10, 20), (10, 10), (100, 20), (4, 1)] {
            let w = orthogonal(m, k, &mut rng);
            let g = gram(&w, m, k, k >= m);
            for (a, row) in g.iter().enumerate() {
                for (b, &x) in row.iter().enumerate() {
                    let want = if a == b { 1.0 } else { 0.0 };
                    assert!((x - want).abs() < 1e-5, "m={m} k={k} ({a},{b}) = {x}");
                }
            }
        }
        let store = ParamStore::new(SeededRng::new(0));
        let e = ClassEmbedding::new(
            EmbeddingKind::Learned { dim: 20 },
            10,
            &store,
            &mut SeededRng::new(1),
            None,
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!((e.num_classes(), e.dim()), (10, 20));
        assert_eq!(store.names(), vec![EMBEDDING_WEIGHT.to_string()]);
        // Same seed, same matrix; the matrix is the stored variable.
        let again = orthogonal(10, 20, &mut SeededRng::new(1));
        assert_eq!(
            e.matrix().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            again
        );
        // A second learned embedding in the same store is refused.
        assert!(ClassEmbedding::new(
            EmbeddingKind::Learned { dim: 20 },
            10,
            &store,
            &mut SeededRng::new(1),
            None,
            &Device::Cpu
        )
        .is_err());
    }

    /// Class 0 (first coordinate; the second is 0): 50, 0, 2.2, 1, 3 at
    /// indices 0, 2, 4, 6, 8. Median distance to the other four, by hand:
    /// 0 -> med(1, 2.2, 3, 50) = 2.6; 1 -> med(1, 1.2, 2, 49) = 1.6;
    /// 2.2 -> med(0.8, 1.2, 2.2, 47.8) = 1.7; 3 -> med(0.8, 2, 3, 47) = 2.5.
    /// So value 1 (index 6); the *mean* distance would pick 2.2 (13.0 vs
    /// 13.3), so this tells median from mean.
    /// Class 1: (0,0), (3,4), (6,8), (0,5), (100,100) at indices 1, 3, 5, 7, 9:
    /// (0,0) -> med(5, 5, 10, 141.4) = 7.5; (3,4) -> med(3.16, 5, 5, 136.5) = 5;
    /// (6,8) -> med(5, 6.71, 10, 131.5) = 8.35; (0,5) -> med(3.16, 5, 6.71, 137.9) = 5.85.
    /// So (3,4) (index 3).
    fn hand_made_set() -> (Tensor, Tensor) {
        let rows: Vec<([f32; 2], u32)> = vec![
            ([50.0, 0.0], 0),
            ([0.0, 0.0], 1),
            ([0.0, 0.0], 0),
            ([3.0, 4.0], 1),
            ([2.2, 0.0], 0),
            ([6.0, 8.0], 1),
            ([1.0, 0.0], 0),
            ([0.0, 5.0], 1),
            ([3.0, 0.0], 0),
            ([100.0, 100.0], 1),
        ];
        let data: Vec<f32> = rows.iter().flat_map(|(x, _)| x.iter().copied()).collect();
        let labels: Vec<u32> = rows.iter().map(|(_, y)| *y).collect();
        let images = Tensor::from_vec(data, (10, 1, 1, 2), &Device::Cpu).unwrap();
        (
            images,
            Tensor::new(labels.as_slice(), &Device::Cpu).unwrap(),
        )
    }

    #[test]
    fn prototype_picks_the_smallest_median_distance() {
        let (images, labels) = hand_made_set();
        assert_eq!(prototype_indices(&images, &labels, 2).unwrap(), vec![6, 3]);
        let store = ParamStore::new(SeededRng::new(0));
        let e = ClassEmbedding::new(
            EmbeddingKind::Prototype,
            2,
            &store,
            &mut SeededRng::new(0),
            Some((&images, &labels)),
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(host2(&e.matrix()), vec![vec![1.0, 0.0], vec![3.0, 4.0]]);
        assert!(e.is_learned());
        // The FM read-out: the nearest embedding.
        let z = Tensor::new(&[[2.9f32, 3.5], [0.0, 0.1]], &Device::Cpu).unwrap();
        assert_eq!(
            e.nearest_class(&z).unwrap().to_vec1::<u32>().unwrap(),
            vec![1, 0]
        );
    }

    /// Prototype images must have the model's C x H x W values.
    #[test]
    fn for_init_refuses_prototypes_of_another_size() {
        let (images, labels) = hand_made_set();
        let init = ModelInit::Train {
            seed: 0,
            prototypes: Some((&images, &labels)),
        };
        let build = |image_dim| {
            ClassEmbedding::for_init(
                EmbeddingKind::Prototype,
                2,
                image_dim,
                &ParamStore::new(SeededRng::new(0)),
                init,
                &mut SeededRng::new(0),
                &Device::Cpu,
            )
        };
        assert_eq!(build(2).unwrap().dim(), 2);
        let e = build(784).unwrap_err().to_string();
        assert!(
            e.contains("prototype images have 2 values each") && e.contains("784"),
            "{e}"
        );
    }

    #[test]
    fn chunking_does_not_change_the_pick() {
        // Chunks of 1, 2 and 5 rows (and one chunk) on the hand-made set.
        let (images, _) = hand_made_set();
        let flat = images.flatten_from(1).unwrap();
        for chunk_elements in [1, 10, 25, 1 << 20] {
            assert_eq!(
                class_medoid_by_median(&flat, &[0, 2, 4, 6, 8], chunk_elements).unwrap(),
                3
            );
            assert_eq!(
                class_medoid_by_median(&flat, &[1, 3, 5, 7, 9], chunk_elements).unwrap(),
                1
            );
        }
        // 301 random points in chunks of 7 rows against a brute-force f64
        // search: the pick's median must be the smallest (up to f32 round-off).
        let (n, dim) = (301, 3);
        let data = SeededRng::new(5).normal_vec(n * dim);
        let flat = Tensor::from_vec(data.clone(), (n, dim), &Device::Cpu).unwrap();
        let idx: Vec<u32> = (0..n as u32).collect();
        let pick = class_medoid_by_median(&flat, &idx, 7 * n).unwrap();
        let point = |i: usize| &data[i * dim..(i + 1) * dim];
        let brute_median = |i: usize| {
            let mut ds: Vec<f64> = (0..n)
                .filter(|&j| j != i)
                .map(|j| {
                    let sq: f64 = point(i)
                        .iter()
                        .zip(point(j))
                        .map(|(a, b)| ((a - b) as f64).powi(2))
                        .sum();
                    sq.sqrt()
                })
                .collect();
            ds.sort_by(f64::total_cmp);
            0.5 * (ds[n / 2 - 1] + ds[n / 2]) // n - 1 = 300 values: even
        };
        let best = (0..n).map(brute_median).fold(f64::INFINITY, f64::min);
        assert!(
            brute_median(pick) - best < 1e-5,
            "{} vs {best}",
            brute_median(pick)
        );
    }

    #[test]
    fn bad_prototype_input_is_an_error() {
        let dev = Device::Cpu;
        let images = Tensor::zeros((3, 4), DType::F32, &dev).unwrap();
        let store = ParamStore::new(SeededRng::new(0));
        let mut rng = SeededRng::new(0);
        let no_source =
            ClassEmbedding::new(EmbeddingKind::Prototype, 2, &store, &mut rng, None, &dev);
        assert!(no_source.is_err());
        let out_of_range = Tensor::new(&[0u32, 1, 5], &dev).unwrap();
        let err = prototype_indices(&images, &out_of_range, 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("label 5"), "{err}");
        let missing_class = Tensor::new(&[0u32, 0, 0], &dev).unwrap();
        let err = prototype_indices(&images, &missing_class, 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("class 1"), "{err}");
        let wrong_count = Tensor::new(&[0u32, 1], &dev).unwrap();
        assert!(prototype_indices(&images, &wrong_count, 2).is_err());
        let loaded =
            ClassEmbedding::for_loading(EmbeddingKind::Prototype, 10, 784, &store, &dev).unwrap();
        assert_eq!((loaded.num_classes(), loaded.dim()), (10, 784));
    }
}
