//! Training across processes: the collective operations a variant needs.
//!
//! A run of N cooperating processes (ranks 0..N) is a [`ProcessGroup`]: a
//! handle to a [`Collective`], the one operation the variants build on,
//! *all-gather* (every rank contributes bytes and receives every rank's,
//! in rank order). The MPI implementation lives outside this crate (the
//! trainer's `mpi` feature); [`SingleProcess`] is the group of one.
//!
//! What crosses between ranks is defined here, once:
//!
//! - [`ProcessGroup::sum_f64`] / [`ProcessGroup::sum_gradients`]: every
//!   rank's values are gathered and summed **in rank order, in f64**, then
//!   rounded once; the result is the same on every rank and does not depend
//!   on timing or on the MPI library's reduction algorithm (an MPI
//!   all-reduce does not promise a fixed order).
//! - [`ProcessGroup::share_tensors`]: every rank's named tensors (a DT
//!   rank's blocks, say) reach every rank, bit for bit
//!   ([`encode_tensors`]).
//!
//! Data parallelism (CT, FM): each rank takes rows `[start, start + len)`
//! of every minibatch of `rows` ([`RowShard`]); its loss is the mean over
//! its rows, so the global batch's mean-loss gradient is
//! `sum_r (len_r / rows) grad_r`, which [`ProcessGroup::sum_gradients`]
//! computes from each rank's gradient and weight `len_r / rows`. The
//! generator of a step, told its shard ([`crate::SeededRng::set_row_shard`]),
//! draws the per-example numbers one process would draw for those rows, so
//! the sum equals one process's gradient on the whole batch up to rounding.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var};

/// The collective operation of a process group (see the module doc).
pub trait Collective: Send + Sync {
    /// This process's rank, in `0..size()`.
    fn rank(&self) -> usize;
    /// The number of processes.
    fn size(&self) -> usize;
    /// Every rank's `bytes`, in rank order (this rank's included). Every
    /// rank must make the same sequence of calls.
    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>>;
}

/// The group of one process: every operation is the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![bytes.to_vec()])
    }
}

/// Rows `[start, start + len)` of a minibatch of `rows`: this process's
/// share of a data-parallel step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowShard {
    /// Rows of the whole minibatch.
    pub rows: usize,
    /// The first row of this process's share.
    pub start: usize,
    /// Rows of this process's share.
    pub len: usize,
}

impl RowShard {
    /// Rank `rank`'s share of `rows` over `size` ranks: contiguous, sizes
    /// differing by at most one (the first `rows % size` ranks take one
    /// more).
    pub fn of(rows: usize, rank: usize, size: usize) -> Self {
        let (base, extra) = (rows / size, rows % size);
        let start = rank * base + rank.min(extra);
        let len = base + usize::from(rank < extra);
        Self { rows, start, len }
    }

    /// The weight of this share's mean-loss gradient in the whole batch's:
    /// `len / rows`.
    pub fn weight(&self) -> f64 {
        self.len as f64 / self.rows as f64
    }
}

/// A handle to the processes of one run (cheap to clone).
#[derive(Clone)]
pub struct ProcessGroup {
    inner: Arc<dyn Collective>,
}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProcessGroup(rank {} of {})", self.rank(), self.size())
    }
}

impl Default for ProcessGroup {
    fn default() -> Self {
        Self::single()
    }
}

impl ProcessGroup {
    /// A group over `collective`.
    pub fn new(collective: Arc<dyn Collective>) -> Self {
        Self { inner: collective }
    }

    /// The group of this process alone.
    pub fn single() -> Self {
        Self::new(Arc::new(SingleProcess))
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.inner.rank()
    }

    /// The number of processes.
    pub fn size(&self) -> usize {
        self.inner.size()
    }

    /// Whether this is rank 0 (the one that writes files).
    pub fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// Every rank's bytes, in rank order.
    pub fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        let all = self.inner.all_gather_bytes(bytes)?;
        if all.len() != self.size() {
            candle_core::bail!(
                "process group: all-gather returned {} parts for {} ranks",
                all.len(),
                self.size()
            );
        }
        Ok(all)
    }

    /// Rank `root`'s bytes on every rank (the others' `bytes` are ignored).
    pub fn broadcast_bytes(&self, root: usize, bytes: &[u8]) -> Result<Vec<u8>> {
        let mine: &[u8] = if self.rank() == root { bytes } else { &[] };
        let mut all = self.all_gather_bytes(mine)?;
        if root >= all.len() {
            candle_core::bail!("process group: no rank {root} in a group of {}", all.len());
        }
        Ok(all.swap_remove(root))
    }

    /// Replaces `values` by their sum over the ranks, added in rank order in
    /// f64 (the same bits on every rank).
    pub fn sum_f64(&self, values: &mut [f64]) -> Result<()> {
        if self.size() == 1 {
            return Ok(());
        }
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let all = self.all_gather_bytes(&bytes)?;
        values.iter_mut().for_each(|v| *v = 0.0);
        for (rank, part) in all.iter().enumerate() {
            if part.len() != bytes.len() {
                candle_core::bail!(
                    "process group: rank {rank} sent {} bytes to a sum of {} values",
                    part.len(),
                    values.len()
                );
            }
            for (v, chunk) in values.iter_mut().zip(part.chunks_exact(8)) {
                *v += f64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            }
        }
        Ok(())
    }

    /// Data-parallel gradients: replaces each parameter's gradient in
    /// `grads` by `sum_r weight_r * grad_r` over the ranks (each rank sends
    /// its f32 gradient and weight; rank order, accumulated in f64, rounded
    /// once to the parameter's dtype), where
    /// this rank's weight is `weight` (its [`RowShard::weight`]). `params`
    /// must list the same parameters in the same order on every rank (an
    /// optimizer's, sorted by name). A parameter without a gradient on a
    /// rank counts as zero there; one without a gradient on every rank
    /// stays without one.
    pub fn sum_gradients(
        &self,
        grads: &mut GradStore,
        params: &[(String, Var)],
        weight: f64,
    ) -> Result<()> {
        if self.size() == 1 && weight == 1.0 {
            return Ok(());
        }
        // This rank's message: its weight (f64), a presence flag per
        // parameter, then every present gradient's values as f32 (what the
        // gradients are; half the bytes of f64), in `params` order.
        let mut message = weight.to_le_bytes().to_vec();
        for (_, var) in params {
            message.push(u8::from(grads.get(var.as_tensor()).is_some()));
        }
        for (name, var) in params {
            if let Some(g) = grads.get(var.as_tensor()) {
                if g.elem_count() != var.elem_count() {
                    candle_core::bail!("gradient of `{name}` has {} values", g.elem_count());
                }
                let g = g.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
                message.extend(g.iter().flat_map(|v| v.to_le_bytes()));
            }
        }
        let all = self.all_gather_bytes(&message)?;
        // sum_r w_r g_r, rank by rank, in f64.
        let mut sums: Vec<Option<Vec<f64>>> = vec![None; params.len()];
        for (rank, part) in all.iter().enumerate() {
            let bad = || candle_core::Error::Msg(format!("gradients from rank {rank}: malformed"));
            if part.len() < 8 + params.len() {
                return Err(bad());
            }
            let w = f64::from_le_bytes(part[..8].try_into().expect("8 bytes"));
            let (flags, mut values) = part[8..].split_at(params.len());
            for ((sum, (_, var)), &flag) in sums.iter_mut().zip(params).zip(flags) {
                if flag == 0 {
                    continue;
                }
                let n = var.elem_count();
                if values.len() < 4 * n {
                    return Err(bad());
                }
                let (mine, rest) = values.split_at(4 * n);
                values = rest;
                let sum = sum.get_or_insert_with(|| vec![0.0; n]);
                for (acc, c) in sum.iter_mut().zip(mine.chunks_exact(4)) {
                    *acc += w * f64::from(f32::from_le_bytes(c.try_into().expect("4 bytes")));
                }
            }
            if !values.is_empty() {
                return Err(bad());
            }
        }
        for ((name, var), sum) in params.iter().zip(sums) {
            let Some(sum) = sum else {
                continue;
            };
            let summed = Tensor::from_vec(sum, var.shape(), var.device())
                .and_then(|t| t.to_dtype(var.dtype()))
                .map_err(|e| candle_core::Error::Msg(format!("gradient of `{name}`: {e}")))?;
            grads.insert(var.as_tensor(), summed);
        }
        Ok(())
    }

    /// Every rank's named tensors on every rank: rank r's `tensors` are
    /// element r of the result, bit for bit, on `device`.
    pub fn share_tensors(
        &self,
        tensors: &[(String, Tensor)],
        device: &Device,
    ) -> Result<Vec<HashMap<String, Tensor>>> {
        let all = self.all_gather_bytes(&encode_tensors(tensors)?)?;
        all.iter()
            .enumerate()
            .map(|(rank, bytes)| {
                decode_tensors(bytes, device)
                    .map_err(|e| candle_core::Error::Msg(format!("tensors from rank {rank}: {e}")))
            })
            .collect()
    }
}

/// The data-parallel part of a variant's training step, between its
/// backward pass and its optimizer step: with a group, sums `grads` of
/// `params` ([`ProcessGroup::sum_gradients`]) and the step's mean-loss
/// values `losses` over the ranks, each rank weighted by its rows of the
/// minibatch (`shard`, from the step's generator; no shard: weight 1).
/// Without a group, nothing.
pub fn sum_data_parallel_step(
    group: Option<&ProcessGroup>,
    shard: Option<RowShard>,
    grads: &mut GradStore,
    params: &[(String, Var)],
    losses: &mut [f64],
) -> Result<()> {
    let Some(group) = group else {
        return Ok(());
    };
    let weight = shard.map_or(1.0, |s| s.weight());
    group.sum_gradients(grads, params, weight)?;
    losses.iter_mut().for_each(|v| *v *= weight);
    group.sum_f64(losses)
}

const DTYPE_TAGS: [(DType, u8); 4] = [
    (DType::F32, 0),
    (DType::F64, 1),
    (DType::U32, 2),
    (DType::I64, 3),
];

/// Named tensors as bytes, exactly (for [`decode_tensors`]): per tensor
/// the name's length (u32) and bytes, a dtype tag, the rank (u8), the
/// dimensions (u64 each) and the values, little-endian. f32, f64, u32 and
/// i64 tensors only (what models and optimizer states hold).
pub fn encode_tensors(tensors: &[(String, Tensor)]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    out.extend((tensors.len() as u64).to_le_bytes());
    for (name, t) in tensors {
        let Some(&(_, tag)) = DTYPE_TAGS.iter().find(|(d, _)| *d == t.dtype()) else {
            candle_core::bail!("cannot send `{name}`: dtype {:?}", t.dtype());
        };
        out.extend((name.len() as u32).to_le_bytes());
        out.extend(name.as_bytes());
        out.push(tag);
        out.push(t.rank() as u8);
        for &d in t.dims() {
            out.extend((d as u64).to_le_bytes());
        }
        let flat = t.flatten_all()?;
        match t.dtype() {
            DType::F32 => flat
                .to_vec1::<f32>()?
                .iter()
                .for_each(|v| out.extend(v.to_le_bytes())),
            DType::F64 => flat
                .to_vec1::<f64>()?
                .iter()
                .for_each(|v| out.extend(v.to_le_bytes())),
            DType::U32 => flat
                .to_vec1::<u32>()?
                .iter()
                .for_each(|v| out.extend(v.to_le_bytes())),
            _ => flat
                .to_vec1::<i64>()?
                .iter()
                .for_each(|v| out.extend(v.to_le_bytes())),
        }
    }
    Ok(out)
}

/// The tensors of [`encode_tensors`]; a malformed buffer is an error.
pub fn decode_tensors(bytes: &[u8], device: &Device) -> Result<HashMap<String, Tensor>> {
    let mut reader = Reader { bytes, at: 0 };
    let count = reader.u64()?;
    let mut out = HashMap::new();
    for _ in 0..count {
        let name_len = reader.u32()? as usize;
        let name = String::from_utf8(reader.take(name_len)?.to_vec())
            .map_err(|_| candle_core::Error::Msg("a tensor name is not UTF-8".into()))?;
        let tag = reader.take(1)?[0];
        let Some(&(dtype, _)) = DTYPE_TAGS.iter().find(|(_, t)| *t == tag) else {
            candle_core::bail!("`{name}`: unknown dtype tag {tag}");
        };
        let rank = reader.take(1)?[0] as usize;
        let dims = (0..rank)
            .map(|_| reader.u64().map(|d| d as usize))
            .collect::<Result<Vec<_>>>()?;
        let n = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| candle_core::Error::Msg(format!("`{name}`: too many values")))?;
        let width = dtype.size_in_bytes();
        let data =
            reader
                .take(n.checked_mul(width).ok_or_else(|| {
                    candle_core::Error::Msg(format!("`{name}`: too many values"))
                })?)?;
        let chunks = data.chunks_exact(width);
        let t = match dtype {
            DType::F32 => Tensor::from_vec(
                chunks
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect::<Vec<_>>(),
                dims,
                device,
            )?,
            DType::F64 => Tensor::from_vec(
                chunks
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                    .collect::<Vec<_>>(),
                dims,
                device,
            )?,
            DType::U32 => Tensor::from_vec(
                chunks
                    .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                    .collect::<Vec<_>>(),
                dims,
                device,
            )?,
            _ => Tensor::from_vec(
                chunks
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect::<Vec<_>>(),
                dims,
                device,
            )?,
        };
        out.insert(name, t);
    }
    if reader.at != bytes.len() {
        candle_core::bail!("{} bytes after the last tensor", bytes.len() - reader.at);
    }
    Ok(out)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| candle_core::Error::Msg("tensor buffer ends early".into()))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
}

/// Test support: N ranks as threads of one process, gathering through
/// shared memory (the semantics of an MPI all-gather).
#[cfg(any(test, feature = "testing"))]
pub mod threads {
    use std::sync::{Arc, Barrier, Mutex};

    use super::{Collective, ProcessGroup};
    use candle_core::Result;

    struct Shared {
        slots: Mutex<Vec<Option<Vec<u8>>>>,
        barrier: Barrier,
    }

    /// One rank of a [`groups`] set.
    pub struct ThreadRank {
        rank: usize,
        size: usize,
        shared: Arc<Shared>,
    }

    impl Collective for ThreadRank {
        fn rank(&self) -> usize {
            self.rank
        }
        fn size(&self) -> usize {
            self.size
        }
        fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
            self.shared.slots.lock().unwrap()[self.rank] = Some(bytes.to_vec());
            self.shared.barrier.wait();
            let all: Vec<Vec<u8>> = self
                .shared
                .slots
                .lock()
                .unwrap()
                .iter()
                .map(|s| s.clone().expect("every rank wrote"))
                .collect();
            // Nobody overwrites a slot before everyone has read.
            self.shared.barrier.wait();
            Ok(all)
        }
    }

    /// `size` groups, one per rank, to be used from `size` threads.
    pub fn groups(size: usize) -> Vec<ProcessGroup> {
        let shared = Arc::new(Shared {
            slots: Mutex::new(vec![None; size]),
            barrier: Barrier::new(size),
        });
        (0..size)
            .map(|rank| {
                ProcessGroup::new(Arc::new(ThreadRank {
                    rank,
                    size,
                    shared: Arc::clone(&shared),
                }))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_batch_in_order() {
        for rows in [1usize, 7, 128, 96] {
            for size in 1..=5usize.min(rows) {
                let shards: Vec<RowShard> =
                    (0..size).map(|r| RowShard::of(rows, r, size)).collect();
                let mut next = 0;
                for s in &shards {
                    assert_eq!(s.start, next);
                    assert!(s.len >= rows / size && s.len <= rows / size + 1);
                    next += s.len;
                }
                assert_eq!(next, rows);
                let total: f64 = shards.iter().map(RowShard::weight).sum();
                assert!((total - 1.0).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn tensors_round_trip_bit_for_bit() {
        let dev = Device::Cpu;
        let tensors = vec![
            (
                "a.weight".to_string(),
                Tensor::new(&[[1.5f32, -0.0, f32::MIN_POSITIVE], [3.0, 4.0, 5.0]], &dev).unwrap(),
            ),
            ("b.step".to_string(), Tensor::new(&[7u32], &dev).unwrap()),
            ("c".to_string(), Tensor::new(2.25f64, &dev).unwrap()),
            ("d".to_string(), Tensor::new(&[-3i64, 9], &dev).unwrap()),
        ];
        let bytes = encode_tensors(&tensors).unwrap();
        let back = decode_tensors(&bytes, &dev).unwrap();
        assert_eq!(back.len(), 4);
        for (name, t) in &tensors {
            let got = &back[name];
            assert_eq!(got.dims(), t.dims());
            assert_eq!(got.dtype(), t.dtype());
            let bits = |t: &Tensor| {
                t.flatten_all()
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()
            };
            assert_eq!(bits(got), bits(t), "{name}");
        }
        // Every truncation is an error, not a panic.
        for cut in 0..bytes.len() {
            assert!(decode_tensors(&bytes[..cut], &dev).is_err(), "cut at {cut}");
        }
    }

    /// Three ranks as threads: sums in rank order, broadcasts, gradient sums
    /// weighted by the shards, checked against sums computed here.
    #[test]
    fn collectives_over_threads_match_sums_by_hand() {
        let groups = threads::groups(3);
        type RankResult = (Vec<f64>, Vec<u8>, Vec<f32>, bool);
        let results: Vec<RankResult> = std::thread::scope(|s| {
            let handles: Vec<_> = groups
                .into_iter()
                .map(|g| {
                    s.spawn(move || {
                        let r = g.rank() as f64;
                        let mut v = vec![r, 10.0 * r + 0.5];
                        g.sum_f64(&mut v).unwrap();
                        let b = g.broadcast_bytes(1, &[g.rank() as u8; 3]).unwrap();
                        let dev = Device::Cpu;
                        let w =
                            Var::from_tensor(&Tensor::new(&[1f32, 2.0], &dev).unwrap()).unwrap();
                        let u = Var::from_tensor(&Tensor::new(&[5f32], &dev).unwrap()).unwrap();
                        // Loss r * sum(w): gradient r on each entry of w; u unused.
                        let loss = (w.as_tensor().sum_all().unwrap() * (r + 1.0)).unwrap();
                        let mut grads = loss.backward().unwrap();
                        let params =
                            vec![("u".to_string(), u.clone()), ("w".to_string(), w.clone())];
                        let shard = RowShard::of(6, g.rank(), 3);
                        g.sum_gradients(&mut grads, &params, shard.weight())
                            .unwrap();
                        let gw = grads.get(w.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
                        (v, b, gw, grads.get(u.as_tensor()).is_none())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (v, b, gw, u_none) in results {
            assert_eq!(v, vec![3.0, 31.5]);
            assert_eq!(b, vec![1u8; 3]);
            // sum_r (r + 1) * 2/6 = (1 + 2 + 3) / 3 = 2.
            assert_eq!(gw, vec![2.0, 2.0]);
            assert!(u_none);
        }
    }
}
