//! `mpirun -np N noprop train ...`: N processes training one run.
//!
//! The launcher (Open MPI's or MPICH's `mpirun`, Slurm's `srun`) tells each
//! process its rank in the environment. With the `mpi` feature, `noprop
//! train` then joins the MPI world ([`launch`]) and trains as one rank of a
//! [`ProcessGroup`] whose all-gather is MPI's (`MPI_Allgatherv`); what the
//! variants exchange over it is in `noprop_core::distributed`. Without a
//! launcher it is the one process it always was. Started by a launcher with
//! several ranks but built without the feature, it stops with an error
//! rather than train N independent copies into one run directory.
//!
//! Rank 0 alone writes: the run directory, its configuration, the metrics,
//! the checkpoints (atomically, as always) and the summary; it alone shows
//! progress and evaluates. The others read the data themselves and receive
//! the resolved configuration from rank 0. A resumed run reads
//! `last.safetensors` on every rank, so the run directory must be on a file
//! system every rank sees (any cluster's shared home or scratch).
//!
//! An error on any rank ends the whole job (`MPI_Abort`) after printing it:
//! no rank waits forever on one that is gone, and the last checkpoint on
//! disk, written atomically, stays good.

use anyhow::Result;
use noprop_core::ProcessGroup;

/// The environment variables in which launchers give the rank and the
/// number of processes: Open MPI, MPICH / Intel MPI (Hydra) and Slurm's
/// PMI-2, Slurm with PMIx.
const LAUNCHER_VARS: [(&str, &str); 3] = [
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
    ("PMI_RANK", "PMI_SIZE"),
    ("PMIX_RANK", "SLURM_NTASKS"),
];

/// The rank and number of processes a launcher gave this process, if one
/// started it.
pub fn launcher_rank() -> Option<(usize, usize)> {
    LAUNCHER_VARS.iter().find_map(|(rank, size)| {
        let rank = std::env::var(rank).ok()?.parse().ok()?;
        let size = std::env::var(size).ok()?.parse().ok()?;
        Some((rank, size))
    })
}

/// This process's place in the run: the group, and what keeps MPI
/// initialised until the process ends.
pub struct Launch {
    pub group: ProcessGroup,
    #[cfg(feature = "mpi")]
    world: Option<mpi_world::MpiWorld>,
}

impl Launch {
    /// One process.
    pub fn single() -> Self {
        Self {
            group: ProcessGroup::single(),
            #[cfg(feature = "mpi")]
            world: None,
        }
    }

    /// Whether several processes train together.
    pub fn is_distributed(&self) -> bool {
        self.group.size() > 1
    }

    /// Ends every process of the job with `code` (after an error on this
    /// one); in one process, returns.
    pub fn abort(&self, code: i32) {
        #[cfg(feature = "mpi")]
        if let Some(world) = &self.world {
            world.abort(code);
        }
        let _ = code;
    }
}

/// Joins the launcher's processes, if a launcher started this one.
pub fn launch() -> Result<Launch> {
    let Some((rank, size)) = launcher_rank() else {
        return Ok(Launch::single());
    };
    #[cfg(feature = "mpi")]
    {
        let _ = rank;
        let world = mpi_world::MpiWorld::init(size)?;
        let group = world.group();
        Ok(Launch {
            group,
            world: Some(world),
        })
    }
    #[cfg(not(feature = "mpi"))]
    {
        if size > 1 {
            anyhow::bail!(
                "started as rank {rank} of {size} by an MPI launcher, but this noprop was built \
                 without the `mpi` feature: build it with `cargo build --release --features mpi` \
                 (docs/distributed.md), or run one process"
            );
        }
        Ok(Launch::single())
    }
}

#[cfg(feature = "mpi")]
mod mpi_world {
    use std::sync::Arc;

    use anyhow::{Context, Result};
    use mpi::datatype::PartitionMut;
    use mpi::environment::Universe;
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::*;
    use mpi::{Count, Threading};
    use noprop_core::distributed::Collective;
    use noprop_core::ProcessGroup;

    /// MPI, initialised, and its world communicator.
    pub struct MpiWorld {
        // Dropped last: MPI_Finalize.
        _universe: Universe,
        world: Arc<World>,
    }

    struct World {
        comm: SimpleCommunicator,
        rank: usize,
        size: usize,
    }

    // SAFETY: MPI is initialised with `Threading::Serialized` (any thread
    // may call, never two at once), and the trainer makes every collective
    // call from the thread that drives training, one at a time.
    unsafe impl Send for World {}
    unsafe impl Sync for World {}

    impl MpiWorld {
        /// `MPI_Init_thread`, checking the world has the `size` processes the
        /// launcher announced.
        pub fn init(size: usize) -> Result<Self> {
            let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
                .context("MPI could not be initialised (was it initialised already?)")?;
            if threading < Threading::Serialized {
                anyhow::bail!(
                    "the MPI library offers threading level {threading:?}, not Serialized"
                );
            }
            let comm = universe.world();
            let (rank, world_size) = (comm.rank() as usize, comm.size() as usize);
            if world_size != size {
                anyhow::bail!(
                    "the launcher announced {size} processes, MPI's world has {world_size}"
                );
            }
            Ok(Self {
                _universe: universe,
                world: Arc::new(World {
                    comm,
                    rank,
                    size: world_size,
                }),
            })
        }

        pub fn group(&self) -> ProcessGroup {
            ProcessGroup::new(self.world.clone())
        }

        pub fn abort(&self, code: i32) {
            self.world.comm.abort(code)
        }
    }

    impl Collective for World {
        fn rank(&self) -> usize {
            self.rank
        }

        fn size(&self) -> usize {
            self.size
        }

        /// `MPI_Allgather` of the lengths, then `MPI_Allgatherv` of the bytes.
        fn all_gather_bytes(&self, bytes: &[u8]) -> candle_core::Result<Vec<Vec<u8>>> {
            let len = Count::try_from(bytes.len()).map_err(|_| {
                candle_core::Error::Msg(format!(
                    "mpi: {} bytes in one message (at most {})",
                    bytes.len(),
                    Count::MAX
                ))
            })?;
            let mut counts = vec![0 as Count; self.size];
            self.comm.all_gather_into(&len, &mut counts[..]);
            let mut displs = Vec::with_capacity(self.size);
            let mut total: usize = 0;
            for &c in &counts {
                displs.push(Count::try_from(total).map_err(|_| {
                    candle_core::Error::Msg("mpi: more than 2 GiB in one all-gather".into())
                })?);
                total += c as usize;
            }
            let mut buffer = vec![0u8; total];
            {
                let mut partition = PartitionMut::new(&mut buffer[..], counts.clone(), &displs[..]);
                self.comm.all_gather_varcount_into(bytes, &mut partition);
            }
            Ok(counts
                .iter()
                .zip(&displs)
                .map(|(&c, &d)| buffer[d as usize..d as usize + c as usize].to_vec())
                .collect())
        }
    }
}
