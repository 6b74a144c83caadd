//! Loading, attaching and reading the eBPF programs.
//!
//! The object is built by `build.rs` and embedded in the binary. Each program
//! is attached on its own: one that cannot attach (a tracepoint this kernel
//! lacks) is reported as not attached and the rest keep running, unless the
//! caller asked for strict mode.

mod batch;
pub mod btf;
pub mod plan;
pub mod verifier;

use std::{
    borrow::Cow,
    os::fd::{AsFd as _, OwnedFd},
    path::Path,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, IterableMap as _, MapData, PerCpuArray, PerCpuHashMap},
    programs::{BtfTracePoint, FEntry, FExit, TracePoint},
};
use iolens_common::{
    Accumulate, AioKey, AioValue, BlockHistKey, BlockKey, BlockValue, COMM_LEN,
    DEFAULT_PROC_ENTRIES, DEFAULT_STATS_ENTRIES, KernelOffsets, OffcpuKey, OffcpuValue,
    ProcCounters, ProcInfo, RDONLY_CAST_PLACEHOLDER, StatKey, StatValue, UringKey, UringValue,
    WAIT_SLOTS, counter, globals, maps,
};
pub use plan::{Attach, Family, FamilyReport, PROBES, ProbeSpec, Variant, program_names};
use tracing::{info, warn};

/// The kernel-side object, built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/iolens"));

/// Rewrites every `call placeholder` instruction in the object's program
/// sections into a call of kfunc `func_id` (vmlinux BTF): src_reg becomes
/// BPF_PSEUDO_KFUNC_CALL (2), imm the id. Returns the patched object; an
/// object without any such call is an error (a stale or foreign build).
fn patch_kfunc_calls(obj: &[u8], placeholder: i32, func_id: u32) -> Result<Vec<u8>, String> {
    use object::{Object as _, ObjectSection as _, SectionKind};
    const BPF_CALL: u8 = 0x85;
    const BPF_PSEUDO_KFUNC_CALL: u8 = 2;
    let file = object::File::parse(obj).map_err(|e| format!("parsing the eBPF object: {e}"))?;
    let mut out = obj.to_vec();
    let mut patched = 0;
    for section in file.sections().filter(|s| s.kind() == SectionKind::Text) {
        let Some((start, len)) = section.file_range() else {
            continue;
        };
        let range = usize::try_from(start).ok().zip(usize::try_from(len).ok());
        let Some(code) = range.and_then(|(s, l)| out.get_mut(s..s.checked_add(l)?)) else {
            return Err(format!("section {:?} out of bounds", section.name()));
        };
        for insn in code.chunks_exact_mut(8) {
            // opcode, dst:src registers (low:high nibble), off (2), imm (4).
            if insn[0] == BPF_CALL
                && insn[1] == 0
                && i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]) == placeholder
            {
                insn[1] = BPF_PSEUDO_KFUNC_CALL << 4;
                insn[4..8].copy_from_slice(&func_id.to_le_bytes());
                patched += 1;
            }
        }
    }
    if patched == 0 {
        return Err("no placeholder calls found".into());
    }
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "this iolens binary was built without its eBPF programs (AYA_BUILD_SKIP); rebuild with `cargo xtask build`"
    )]
    NoObject,
    #[error("loading the eBPF object failed: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the eBPF object has no program `{0}` (stale build?)")]
    NoProgram(&'static str),
    #[error("the eBPF object has no map `{0}` (stale build?)")]
    NoMap(&'static str),
    #[error("map `{name}`: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("map `{name}`: batch lookup: {source}")]
    Batch {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the possible CPUs (/sys/devices/system/cpu/possible): {0}")]
    Cpus(#[source] std::io::Error),
    #[error("--strict: degraded on this kernel: {0}")]
    Degraded(String),
}

/// What the user asked the kernel side to do.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// Count only these tgids (empty: all).
    pub pids: Vec<u32>,
    /// Count only tasks with these comms (empty: all). At most 15 bytes each.
    pub comms: Vec<String>,
    /// Count only tasks in these cgroup v2 ids (empty: all).
    pub cgroups: Vec<u64>,
    pub stats_entries: u32,
    pub proc_entries: u32,
    /// Fail if any probe family is degraded (something it counts is lost
    /// on this kernel).
    pub strict: bool,
    /// Turn on the kernel's per-program run-time accounting.
    pub program_stats: bool,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            pids: Vec::new(),
            comms: Vec::new(),
            cgroups: Vec::new(),
            stats_entries: DEFAULT_STATS_ENTRIES,
            proc_entries: DEFAULT_PROC_ENTRIES,
            strict: false,
            program_stats: false,
        }
    }
}

/// Attach state of one probe, for the self-metrics and the log.
#[derive(Debug, Clone)]
pub struct ProbeStatus {
    pub spec: &'static ProbeSpec,
    pub attached: bool,
    /// The variant attached, and those passed over with why.
    pub choice: plan::Choice,
    /// Why no variant attached (every reason, in order).
    pub error: Option<String>,
    /// Instructions the verifier processed to accept the program (the
    /// kernel's `verified_insns`, Linux 5.16; None before, or if it was
    /// not loaded). The limit is [`verifier::MAX_PROCESSED_INSNS`].
    pub verified_insns: Option<u32>,
    /// The program's stack as the verifier counts it, from the object.
    pub stack: Option<verifier::StackFigures>,
}

impl ProbeStatus {
    /// The program attached, else the first variant's.
    pub fn program(&self) -> &'static str {
        self.choice
            .variant
            .unwrap_or(&self.spec.variants[0])
            .program
    }

    /// Where it is attached, else where the first variant would be.
    pub fn attach(&self) -> Attach {
        self.choice.variant.unwrap_or(&self.spec.variants[0]).attach
    }
}

/// Run statistics of one program (needs BPF_ENABLE_STATS).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProgramStats {
    pub run_time_ns: u64,
    pub run_count: u64,
}

/// One read of the kernel-side maps.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Per key, summed over CPUs.
    pub stats: Vec<(StatKey, StatValue)>,
    pub procs: Vec<(u32, ProcInfo)>,
    /// Per tgid, summed over CPUs.
    pub pstats: Vec<(u32, ProcCounters)>,
    /// Per (tgid, opcode), summed over CPUs.
    pub uring: Vec<(UringKey, UringValue)>,
    /// Per (tgid, syscall): time slept inside it, summed over CPUs.
    pub offcpu: Vec<(OffcpuKey, OffcpuValue)>,
    /// Per (tgid, opcode, ends), summed over CPUs.
    pub aio: Vec<(AioKey, AioValue)>,
    /// Per process name: epoll blocked-time histogram, summed over CPUs.
    pub wait_hist: Vec<([u8; COMM_LEN], [u64; WAIT_SLOTS])>,
    /// Per (owner, device, op): block bytes and requests, summed over CPUs.
    pub block: Vec<(BlockKey, BlockValue)>,
    /// Per (process name, op): block latency histogram, summed over CPUs.
    pub block_hist: Vec<(BlockHistKey, [u64; WAIT_SLOTS])>,
    /// Indexed by [`counter`] constants, summed over CPUs.
    pub counters: [u64; counter::COUNT as usize],
    /// The batch reads' buffers, kept from one read to the next.
    pub(crate) scratch: batch::BatchBuf,
    /// Per per-CPU map with an insert counter (SYSCALL_STATS,
    /// PROC_COUNTERS, URING_STATS, SYSCALL_OFFCPU, BLOCK_STATS, AIO_STATS):
    /// the counter when the map was last read.
    pub(crate) read_inserts: [Option<u64>; 6],
    /// Keys were deleted since the last read: read every map next time.
    pub(crate) stale: bool,
    /// `stats`, `pstats`, `uring`, `offcpu`, `block`, `aio`: not read again
    /// by the last [`Probes::read_changed`] (as they were the read before).
    pub(crate) unchanged: [bool; 6],
    /// PROC_INFO's insert counter when it was last read, and background
    /// reads since that skipped it.
    pub(crate) procs_read: Option<u64>,
    pub(crate) procs_skipped: u32,
    /// Background reads since every map was last read in full.
    pub(crate) since_full: u32,
}

impl Snapshot {
    /// Keys were deleted from the maps (`Probes::forget`): the next
    /// [`Probes::read_changed`] reads every map.
    pub fn invalidate(&mut self) {
        self.stale = true;
    }
}

/// The background refresh reads the process table at least every this
/// many reads (see [`Probes::read_changed`]).
const PROCS_EVERY: u32 = 5;

/// The background refresh reads every map in full at least every this
/// many reads, scrape or not. A map skipped since its last read lost
/// nothing (no insert, so no eviction), but an eviction after a long quiet
/// spell would lose what its victim counted since that read: this bounds
/// that to 30 refresh intervals (30 s by default) when nothing scrapes; a
/// scrape reads everything anyway. At 10,000 idle processes a full read
/// every second took 4.4% of a core against 0.9% with the skips (bench
/// scale): ~35 ms a read, ~0.1% of a core at this rate.
const FULL_EVERY: u32 = 30;

/// Loaded and attached programs with handles on their maps.
pub struct Probes {
    ebpf: Ebpf,
    stats: PerCpuHashMap<MapData, StatKey, StatValue>,
    procs: HashMap<MapData, u32, ProcInfo>,
    counters: PerCpuArray<MapData, u64>,
    pstats: PerCpuHashMap<MapData, u32, ProcCounters>,
    uring: PerCpuHashMap<MapData, UringKey, UringValue>,
    offcpu: PerCpuHashMap<MapData, OffcpuKey, OffcpuValue>,
    aio: PerCpuHashMap<MapData, AioKey, AioValue>,
    wait_hist: PerCpuHashMap<MapData, [u8; COMM_LEN], [u64; WAIT_SLOTS]>,
    block: PerCpuHashMap<MapData, BlockKey, BlockValue>,
    block_hist: PerCpuHashMap<MapData, BlockHistKey, [u64; WAIT_SLOTS]>,
    status: Vec<ProbeStatus>,
    families: Vec<FamilyReport>,
    stats_capacity: u32,
    procs_capacity: u32,
    /// Possible CPUs: per-CPU maps hold a value for each.
    cpus: usize,
    /// Keeps kernel run-time accounting on while iolens runs; closing it
    /// turns it off again.
    _stats_fd: Option<OwnedFd>,
}

/// Encodes a comm filter entry the way the kernel stores comm: NUL-padded.
pub fn comm_key(comm: &str) -> Option<[u8; COMM_LEN]> {
    let bytes = comm.as_bytes();
    if bytes.is_empty() || bytes.len() >= COMM_LEN || bytes.contains(&0) {
        return None;
    }
    let mut key = [0u8; COMM_LEN];
    key[..bytes.len()].copy_from_slice(bytes);
    Some(key)
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, ProbeError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(ProbeError::NoMap(name))?;
    T::try_from(map).map_err(|source| ProbeError::Map { name, source })
}

impl Probes {
    /// Loads the object, configures filters and attaches every program.
    pub fn load(config: &ProbeConfig) -> Result<Probes, ProbeError> {
        if OBJECT.is_empty() {
            return Err(ProbeError::NoObject);
        }
        let kernel_btf = btf::Btf::from_file(Path::new("/sys/kernel/btf/vmlinux"));
        // IOLENS_NO_BTF_OFFSETS=1 acts as if the offsets could not be
        // parsed, so the tests cover what a kernel with unusable BTF gets.
        let unusable = std::env::var_os("IOLENS_NO_BTF_OFFSETS").is_some_and(|v| v == "1");
        let parsed = match &kernel_btf {
            _ if unusable => Err("IOLENS_NO_BTF_OFFSETS=1".to_owned()),
            Ok(b) => b.kernel_offsets().map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let mut offsets = match parsed {
            Ok(o) => o,
            Err(e) => {
                warn!(
                    "kernel BTF offsets unavailable ({e}); bytes will be counted but their path (file, socket, pipe) will be `unknown` (and without /sys/kernel/btf/vmlinux the BTF-typed probes cannot load at all)"
                );
                KernelOffsets::default()
            }
        };
        if offsets.valid != 0 && offsets.folio_valid == 0 {
            warn!(
                "kernel BTF lacks folio.flags, folio._folio_order/_flags_1 or PG_head: each dirtied folio counts as one page"
            );
        }
        if offsets.valid != 0 && offsets.sched_info_valid == 0 {
            warn!(
                "kernel BTF lacks task_struct.sched_info.last_arrival (CONFIG_SCHED_INFO off?) or the run-queue clock (CONFIG_FAIR_GROUP_SCHED off?): sleep time, epoll blocked time and off-CPU time by syscall are not measured"
            );
        }
        // The kfunc calls aya cannot relocate, put in place by hand.
        let rdonly_cast = kernel_btf
            .as_ref()
            .ok()
            .and_then(|b| b.func_id("bpf_rdonly_cast"));
        // IOLENS_PROBE_READS=1 takes the path of kernels without the
        // kfunc on one that has it, so the tests cover that path too.
        let forced = std::env::var_os("IOLENS_PROBE_READS").is_some_and(|v| v == "1");
        if forced {
            info!("IOLENS_PROBE_READS=1: using probe reads");
        }
        let rdonly_cast = rdonly_cast.filter(|_| !forced);
        let object: Cow<'static, [u8]> = match rdonly_cast {
            Some(id)
                if offsets.valid != 0 && offsets.btf_kiocb != 0 && offsets.btf_io_kiocb != 0 =>
            {
                match patch_kfunc_calls(OBJECT, RDONLY_CAST_PLACEHOLDER, id) {
                    Ok(patched) => {
                        offsets.cast_valid = 1;
                        Cow::Owned(patched)
                    }
                    Err(e) => {
                        warn!(
                            "cannot place the bpf_rdonly_cast kfunc calls ({e}); using probe reads"
                        );
                        Cow::Borrowed(OBJECT)
                    }
                }
            }
            _ => {
                if !forced {
                    info!(
                        "no bpf_rdonly_cast kfunc (Linux < 6.2?) or its types: using probe reads"
                    );
                }
                Cow::Borrowed(OBJECT)
            }
        };
        // What each probe may attach to here, and what the programs must
        // know of the variant they will run as (set before load: globals
        // are constants to the verifier).
        let features = plan::KernelFeatures {
            btf: kernel_btf.as_ref().ok(),
            tracefs: Path::new(TRACEFS),
        };
        let fitting: Vec<plan::Fitting> = PROBES.iter().map(|s| features.sort(s)).collect();
        let first_fit = |probe: &str| {
            PROBES
                .iter()
                .position(|p| p.name == probe)
                .and_then(|i| fitting[i].fit.first().map(|v| v.attach))
        };
        if first_fit("wb_dirty") == Some(Attach::Btf("writeback_dirty_page")) {
            // A page each: the program's folio sizing would load beyond a
            // `struct page`.
            offsets.folio_valid = 0;
        }
        offsets.switch_prev_state_arg = u32::from(
            features
                .btf
                .and_then(|b| b.tracepoint_args("sched_switch"))
                .is_some_and(|a| a.len() >= 4),
        );
        offsets.fm_add_order =
            tracefs_field_offset("filemap", "mm_filemap_add_to_page_cache", "order").unwrap_or(0);
        offsets.uring_create_ctx =
            tracefs_field_offset("io_uring", "io_uring_create", "ctx").unwrap_or(16);
        let filter_pids = u8::from(!config.pids.is_empty());
        let filter_comms = u8::from(!config.comms.is_empty());
        let filter_cgroups = u8::from(!config.cgroups.is_empty());
        let mut ebpf = EbpfLoader::new()
            .override_global(globals::OFFSETS, &offsets, true)
            .override_global(globals::FILTER_PIDS, &filter_pids, true)
            .override_global(globals::FILTER_COMMS, &filter_comms, true)
            .override_global(globals::FILTER_CGROUPS, &filter_cgroups, true)
            .map_max_entries(maps::SYSCALL_STATS, config.stats_entries)
            .map_max_entries(maps::PROC_INFO, config.proc_entries)
            .map_max_entries(maps::PROC_COUNTERS, config.proc_entries)
            // THREAD_STORAGE is task local storage, which aya creates but has no
            // user-space type for; only the kernel side touches it.
            .allow_unsupported_maps()
            .load(&object)
            .map_err(|e| ProbeError::Load(Box::new(e)))?;

        // Filters go in before any program is attached, so nothing outside
        // them is ever counted.
        {
            let mut pid_filter: HashMap<&mut MapData, u32, u8> = HashMap::try_from(
                ebpf.map_mut(maps::PID_FILTER)
                    .ok_or(ProbeError::NoMap(maps::PID_FILTER))?,
            )
            .map_err(|source| ProbeError::Map {
                name: maps::PID_FILTER,
                source,
            })?;
            for pid in &config.pids {
                pid_filter
                    .insert(pid, 1, 0)
                    .map_err(|source| ProbeError::Map {
                        name: maps::PID_FILTER,
                        source,
                    })?;
            }
        }
        {
            let mut comm_filter: HashMap<&mut MapData, [u8; COMM_LEN], u8> = HashMap::try_from(
                ebpf.map_mut(maps::COMM_FILTER)
                    .ok_or(ProbeError::NoMap(maps::COMM_FILTER))?,
            )
            .map_err(|source| ProbeError::Map {
                name: maps::COMM_FILTER,
                source,
            })?;
            for comm in &config.comms {
                // Validated by the CLI; an invalid one here is skipped.
                if let Some(key) = comm_key(comm) {
                    comm_filter
                        .insert(key, 1, 0)
                        .map_err(|source| ProbeError::Map {
                            name: maps::COMM_FILTER,
                            source,
                        })?;
                }
            }
        }

        // Off by default: while the fd is open, every BPF program on the
        // machine reads the clock twice per run (measured here: ~200 ns per
        // syscall on a VM), which would triple iolens's own overhead.
        {
            let mut cgroup_filter: HashMap<&mut MapData, u64, u8> = HashMap::try_from(
                ebpf.map_mut(maps::CGROUP_FILTER)
                    .ok_or(ProbeError::NoMap(maps::CGROUP_FILTER))?,
            )
            .map_err(|source| ProbeError::Map {
                name: maps::CGROUP_FILTER,
                source,
            })?;
            for id in &config.cgroups {
                cgroup_filter
                    .insert(id, 1, 0)
                    .map_err(|source| ProbeError::Map {
                        name: maps::CGROUP_FILTER,
                        source,
                    })?;
            }
        }

        let stats_fd = if config.program_stats {
            match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    warn!("BPF_ENABLE_STATS failed ({e}); per-program run time will read 0");
                    None
                }
            }
        } else {
            None
        };

        // Parsed once for every BTF-typed program (several MB of BTF).
        let kernel_btf =
            aya::Btf::from_sys_fs().map_err(|e| format!("reading kernel BTF: {}", chain(&e)));
        let stacks = verifier::stack_figures(&object).unwrap_or_else(|e| {
            warn!("cannot compute the programs' stack depths from the object: {e}");
            Default::default()
        });
        let mut status = Vec::with_capacity(PROBES.len());
        // A program that failed to load cannot be tried again elsewhere.
        let mut refused: Vec<&'static str> = Vec::new();
        for (spec, fitting) in PROBES.iter().zip(fitting) {
            let mut choice = plan::Choice {
                variant: None,
                passed_over: fitting.not,
            };
            for v in fitting.fit {
                if refused.contains(&v.program) {
                    choice
                        .passed_over
                        .push((v, format!("{} was refused above", v.program)));
                    continue;
                }
                match attach(&mut ebpf, v, kernel_btf.as_ref()) {
                    Ok(()) => {
                        choice.variant = Some(v);
                        break;
                    }
                    Err(e) => {
                        refused.push(v.program);
                        choice.passed_over.push((v, e));
                    }
                }
            }
            let verified_insns = choice
                .variant
                .and_then(|v| ebpf.program(v.program))
                .and_then(|p| p.info().ok())
                .and_then(|i| i.verified_instruction_count());
            let error = if choice.variant.is_some() {
                None
            } else {
                Some(
                    choice
                        .passed_over
                        .iter()
                        .map(|(v, why)| format!("{}: {why}", v.attach))
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            };
            match (&choice.variant, &error) {
                (Some(v), _) => info!(
                    probe = spec.name,
                    program = v.program,
                    attach = %v.attach,
                    "attached"
                ),
                (None, Some(e)) => warn!(probe = spec.name, "not attached: {e}"),
                (None, None) => {}
            }
            let program = choice.variant.unwrap_or(&spec.variants[0]).program;
            status.push(ProbeStatus {
                spec,
                attached: choice.variant.is_some(),
                stack: stacks.get(program).cloned(),
                choice,
                error,
                verified_insns,
            });
        }
        let choices: Vec<plan::Choice> = status.iter().map(|s| s.choice.clone()).collect();
        let families = plan::report(&choices, &offsets);
        for f in &families {
            let how = f.attachments();
            if f.lost.is_empty() {
                info!("family {} {}: {how}", f.family, f.status());
            } else {
                warn!(
                    "family {} {}: {how}; lost: {}",
                    f.family,
                    f.status(),
                    f.lost.join("; ")
                );
            }
        }
        if config.strict {
            let degraded: Vec<String> = families
                .iter()
                .filter(|f| !f.lost.is_empty())
                .map(|f| format!("{}: {}", f.family, f.lost.join("; ")))
                .collect();
            if !degraded.is_empty() {
                return Err(ProbeError::Degraded(degraded.join(" | ")));
            }
        }

        if status.iter().any(|s| s.attached && s.spec.name == "exit") {
            enable_task_memory(&mut ebpf);
        }
        let stats = take_map(&mut ebpf, maps::SYSCALL_STATS)?;
        let procs = take_map(&mut ebpf, maps::PROC_INFO)?;
        let counters = take_map(&mut ebpf, maps::HEALTH)?;
        let pstats = take_map(&mut ebpf, maps::PROC_COUNTERS)?;
        let uring = take_map(&mut ebpf, maps::URING_STATS)?;
        let offcpu = take_map(&mut ebpf, maps::SYSCALL_OFFCPU)?;
        let aio = take_map(&mut ebpf, maps::AIO_STATS)?;
        let wait_hist = take_map(&mut ebpf, maps::EPOLL_WAIT_HIST)?;
        let block = take_map(&mut ebpf, maps::BLOCK_STATS)?;
        let block_hist = take_map(&mut ebpf, maps::BLOCK_HIST)?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| ProbeError::Cpus(e))?;
        Ok(Probes {
            ebpf,
            stats,
            procs,
            counters,
            pstats,
            uring,
            offcpu,
            aio,
            wait_hist,
            block,
            block_hist,
            status,
            families,
            stats_capacity: config.stats_entries,
            procs_capacity: config.proc_entries,
            cpus,
            _stats_fd: stats_fd,
        })
    }

    pub fn status(&self) -> &[ProbeStatus] {
        &self.status
    }

    /// Per family: how it is attached on this kernel and what it loses.
    pub fn families(&self) -> &[FamilyReport] {
        &self.families
    }

    pub fn stats_capacity(&self) -> u32 {
        self.stats_capacity
    }

    pub fn procs_capacity(&self) -> u32 {
        self.procs_capacity
    }

    /// Run time and count of an attached program.
    pub fn program_stats(&self, program: &str) -> Option<ProgramStats> {
        let info = self.ebpf.program(program)?.info().ok()?;
        Some(ProgramStats {
            run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
            run_count: info.run_count(),
        })
    }

    /// Reads every map into `snap`, reusing its buffers.
    pub fn read(&self, snap: &mut Snapshot) -> Result<(), ProbeError> {
        self.read_maps(snap, true)
    }

    /// What the background refresh reads: like [`Probes::read`], but a
    /// per-CPU map that had no key inserted since it was last read (its
    /// insert counter did not move) is not read again, and its entries in
    /// `snap` stay as they were. The refresh exists so that no count is
    /// lost to an LRU eviction, and the kernel evicts only to insert; a
    /// scrape reads everything. The process table is read when a process
    /// was inserted, and at least every `PROCS_EVERY` reads (the kernel
    /// stamps exits in place). With 10,000 idle processes this took the
    /// agent's idle CPU from 4.4% of a core to 1.5% (every map but the
    /// process table skipped) and 0.9% (bench scale): a batch read walks
    /// every hash bucket, ~130,000 of them in a SYSCALL_STATS sized for
    /// 10,000 processes.
    pub fn read_changed(&self, snap: &mut Snapshot) -> Result<(), ProbeError> {
        self.read_maps(snap, false)
    }

    fn read_maps(&self, snap: &mut Snapshot, all: bool) -> Result<(), ProbeError> {
        // Counters first: evictions are derived as inserts - live entries,
        // so an insert must never be counted without its key having been
        // there to see when the maps are read below.
        for (i, slot) in snap.counters.iter_mut().enumerate() {
            let per_cpu = self
                .counters
                .get(&(i as u32), 0)
                .map_err(|source| ProbeError::Map {
                    name: maps::HEALTH,
                    source,
                })?;
            *slot = per_cpu.iter().sum();
        }
        let cpus = self.cpus;
        let inserts = [
            counter::SYSCALL_STATS_INSERTS,
            counter::PROC_COUNTERS_INSERTS,
            counter::URING_STATS_INSERTS,
            counter::OFFCPU_INSERTS,
            counter::BLOCK_STATS_INSERTS,
            counter::AIO_STATS_INSERTS,
        ]
        .map(|c| snap.counters[c as usize]);
        let read_all = all || std::mem::take(&mut snap.stale) || snap.since_full + 1 >= FULL_EVERY;
        snap.since_full = if read_all { 0 } else { snap.since_full + 1 };
        // Counters were read before the maps: an insert after that moves
        // the counter past what is recorded, and the map is read next time.
        let mut due = [false; 6];
        for (i, d) in due.iter_mut().enumerate() {
            *d = read_all || snap.read_inserts[i] != Some(inserts[i]);
            if *d {
                snap.read_inserts[i] = Some(inserts[i]);
            }
            snap.unchanged[i] = !*d;
        }
        let buf = &mut snap.scratch;
        if due[0] {
            read_summed(&self.stats, maps::SYSCALL_STATS, &mut snap.stats, buf, cpus)?;
        }
        if due[1] {
            read_summed(
                &self.pstats,
                maps::PROC_COUNTERS,
                &mut snap.pstats,
                buf,
                cpus,
            )?;
        }
        if due[2] {
            read_summed(&self.uring, maps::URING_STATS, &mut snap.uring, buf, cpus)?;
        }
        if due[3] {
            read_summed(
                &self.offcpu,
                maps::SYSCALL_OFFCPU,
                &mut snap.offcpu,
                buf,
                cpus,
            )?;
        }
        read_summed(
            &self.wait_hist,
            maps::EPOLL_WAIT_HIST,
            &mut snap.wait_hist,
            buf,
            cpus,
        )?;
        if due[4] {
            read_summed(&self.block, maps::BLOCK_STATS, &mut snap.block, buf, cpus)?;
        }
        if due[5] {
            read_summed(&self.aio, maps::AIO_STATS, &mut snap.aio, buf, cpus)?;
        }
        // No insert counter (a histogram per name is never evicted): read
        // every time, as the epoll histograms.
        read_summed(
            &self.block_hist,
            maps::BLOCK_HIST,
            &mut snap.block_hist,
            buf,
            cpus,
        )?;
        // Exits are stamped in place (no counter moves), so the process
        // table is read every PROCS_EVERY-th background read at least; the
        // stamp is the kernel's clock, so reading it late does not delay
        // the exit's --exit-ttl.
        let proc_inserts = snap.counters[counter::PROC_INFO_INSERTS as usize];
        if !read_all
            && snap.procs_read == Some(proc_inserts)
            && snap.procs_skipped + 1 < PROCS_EVERY
        {
            snap.procs_skipped += 1;
            return Ok(());
        }
        snap.procs_read = Some(proc_inserts);
        snap.procs_skipped = 0;
        snap.procs.clear();
        let procs = &mut snap.procs;
        let batched = batch::lookup_all(
            self.procs.map().fd().as_fd(),
            size_of::<u32>(),
            size_of::<ProcInfo>(),
            buf,
            |k, v| procs.push((pod_from(k), pod_from(v))),
        )
        .map_err(|source| ProbeError::Batch {
            name: maps::PROC_INFO,
            source,
        })?;
        if !batched {
            for item in self.procs.iter() {
                let (tgid, info) = item.map_err(|source| ProbeError::Map {
                    name: maps::PROC_INFO,
                    source,
                })?;
                snap.procs.push((tgid, info));
            }
        }
        Ok(())
    }

    /// Forgets a process: its keys in every map.
    pub fn forget(&mut self, e: &crate::metrics::Expired) {
        let tgid = e.tgid;
        // Already gone (evicted) is fine throughout.
        for key in &e.keys {
            let _ = self.stats.remove(key);
        }
        for key in &e.block_keys {
            let _ = self.block.remove(key);
        }
        for key in &e.uring_keys {
            let _ = self.uring.remove(key);
        }
        for key in &e.offcpu_keys {
            let _ = self.offcpu.remove(key);
        }
        for key in &e.aio_keys {
            let _ = self.aio.remove(key);
        }
        let _ = self.pstats.remove(&tgid);
        let _ = self.procs.remove(&tgid);
    }
}

/// A Pod value from the bytes the kernel wrote (any bytes are a valid
/// value; the slice may be unaligned).
fn pod_from<T: aya::Pod>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= size_of::<T>(), "short map entry");
    // SAFETY: T is Pod, so any bit pattern is a valid T, and the slice
    // holds at least size_of::<T>() bytes (checked above).
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

/// Reads a per-CPU hash map into `out` (emptied first, its buffer reused):
/// each key once, its values summed over CPUs. One bpf(2) call per few
/// thousand keys ([`batch`]); by iteration on a kernel without batch
/// lookups.
fn read_summed<K, V>(
    map: &PerCpuHashMap<MapData, K, V>,
    name: &'static str,
    out: &mut Vec<(K, V)>,
    buf: &mut batch::BatchBuf,
    cpus: usize,
) -> Result<(), ProbeError>
where
    K: aya::Pod,
    V: aya::Pod + Accumulate,
{
    out.clear();
    // Per key, every possible CPU's value, each rounded up to 8 bytes.
    let stride = size_of::<V>().next_multiple_of(8);
    let batched = batch::lookup_all(
        map.map().fd().as_fd(),
        size_of::<K>(),
        stride * cpus,
        buf,
        |k, v| {
            let mut per_cpu = v.chunks_exact(stride);
            let Some(first) = per_cpu.next() else {
                return;
            };
            let mut total: V = pod_from(first);
            for c in per_cpu {
                total.accumulate(&pod_from(c));
            }
            out.push((pod_from(k), total));
        },
    )
    .map_err(|source| ProbeError::Batch { name, source })?;
    if batched {
        return Ok(());
    }
    for item in map.iter() {
        let (key, per_cpu) = item.map_err(|source| ProbeError::Map { name, source })?;
        let mut cpus = per_cpu.iter();
        let Some(first) = cpus.next() else {
            continue;
        };
        let mut total = *first;
        for v in cpus {
            total.accumulate(v);
        }
        out.push((key, total));
    }
    Ok(())
}

/// Lets sys_exit remember the current task per CPU (see `current_task` in
/// the kernel side), which is safe only while thread exits bump the epoch.
/// A failure costs speed only, so it is logged, not fatal.
fn enable_task_memory(ebpf: &mut Ebpf) {
    let result = ebpf
        .map_mut(maps::EPOCH)
        .ok_or_else(|| "no such map".to_owned())
        .and_then(|m| aya::maps::Array::<_, u64>::try_from(m).map_err(|e| e.to_string()))
        .and_then(|mut a| {
            a.set(0, iolens_common::EPOCH_LIVE, 0)
                .map_err(|e| e.to_string())
        });
    if let Err(e) = result {
        warn!("cannot enable the per-CPU current-task memory ({e}); sys_exit asks a helper");
    }
}

fn attach(
    ebpf: &mut Ebpf,
    v: &Variant,
    kernel_btf: Result<&aya::Btf, &String>,
) -> Result<(), String> {
    let program = ebpf
        .program_mut(v.program)
        .ok_or_else(|| ProbeError::NoProgram(v.program).to_string())?;
    let load = |e: &dyn std::error::Error| format!("load: {}", chain(e));
    let attach = |e: &dyn std::error::Error| format!("attach: {}", chain(e));
    match v.attach {
        Attach::Btf(name) => {
            let p: &mut BtfTracePoint = program.try_into().map_err(|e| format!("{e}"))?;
            p.load(name, kernel_btf.map_err(Clone::clone)?)
                .map_err(|e| load(&e))?;
            p.attach().map_err(|e| attach(&e))?;
        }
        Attach::FEntry(name) => {
            let p: &mut FEntry = program.try_into().map_err(|e| format!("{e}"))?;
            p.load(name, kernel_btf.map_err(Clone::clone)?)
                .map_err(|e| load(&e))?;
            p.attach().map_err(|e| attach(&e))?;
        }
        Attach::FExit(name) => {
            let p: &mut FExit = program.try_into().map_err(|e| format!("{e}"))?;
            p.load(name, kernel_btf.map_err(Clone::clone)?)
                .map_err(|e| load(&e))?;
            p.attach().map_err(|e| attach(&e))?;
        }
        Attach::Classic(category, name) => {
            let p: &mut TracePoint = program.try_into().map_err(|e| format!("{e}"))?;
            p.load().map_err(|e| load(&e))?;
            p.attach(category, name).map_err(|e| attach(&e))?;
        }
    }
    Ok(())
}

/// Where tracefs is (mounted by the agent if it was not).
pub const TRACEFS: &str = "/sys/kernel/tracing";

/// The byte offset of `field` in a classic tracepoint's record, from its
/// tracefs format (a line `field:unsigned char order; offset:36; size:1; ...`,
/// tab-separated).
pub fn tracefs_field_offset(category: &str, name: &str, field: &str) -> Option<u32> {
    let path = Path::new(TRACEFS)
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    let text = std::fs::read_to_string(path).ok()?;
    format_field_offset(&text, field)
}

fn format_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?.split(';').next()?;
        // The name is the declaration's last word, before any `[N]`.
        let name = decl.split_whitespace().last()?.split('[').next()?;
        if name != field {
            return None;
        }
        line.split(';')
            .find_map(|part| part.trim().strip_prefix("offset:"))
            .and_then(|n| n.trim().parse().ok())
    })
}

/// An error and its sources on one line: aya's top-level messages name the
/// operation, the sources say why (the verifier log, ENOENT, ...).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `#define __NR_<name> <nr>` lines of a uapi unistd header.
    fn unistd(path: &str) -> Option<std::collections::BTreeMap<u64, String>> {
        let text = std::fs::read_to_string(path).ok()?;
        Some(
            text.lines()
                .filter_map(|l| {
                    let rest = l.strip_prefix("#define __NR_")?;
                    let (name, nr) = rest.split_once(' ')?;
                    Some((nr.trim().parse().ok()?, name.to_owned()))
                })
                .collect(),
        )
    }

    /// The ia32 translation against the kernel's own syscall tables (the
    /// uapi headers of linux-libc-dev): every translated number names the
    /// same call in both, and every accounted call that ia32 has is
    /// translated.
    #[test]
    fn ia32_numbers_match_the_kernel_headers() {
        let dir = "/usr/include/x86_64-linux-gnu/asm";
        let (Some(n32), Some(n64)) = (
            unistd(&format!("{dir}/unistd_32.h")),
            unistd(&format!("{dir}/unistd_64.h")),
        ) else {
            assert!(
                std::env::var_os("CI").is_none_or(|v| v != "true"),
                "CI needs linux-libc-dev's asm/unistd_{{32,64}}.h"
            );
            return;
        };
        // ia32 names whose x86_64 call has another name.
        let same = |a: &str, b: &str| {
            a == b
                || matches!(
                    (a, b),
                    ("sendfile64", "sendfile") | ("_newselect", "select")
                )
        };
        let mut translated = 0;
        for (&nr32, name32) in &n32 {
            let nr64 = iolens_common::Syscall::i386_to_x86_64(nr32);
            if nr64 == u64::MAX {
                continue;
            }
            translated += 1;
            let name64 = n64
                .get(&nr64)
                .unwrap_or_else(|| panic!("ia32 {name32} -> x86_64 {nr64}: no such call"));
            assert!(
                same(name32, name64),
                "ia32 {name32} ({nr32}) -> x86_64 {name64} ({nr64})"
            );
        }
        // 30 accounted calls (sendfile twice) and 7 that close or replace fds.
        assert_eq!(translated, 37, "translated ia32 calls");
        for sc in iolens_common::Syscall::ALL {
            let nr64 = n64
                .iter()
                .find(|(_, n)| same(sc.name(), n))
                .map(|(&nr, _)| nr)
                .unwrap_or_else(|| panic!("x86_64 has no {}", sc.name()));
            assert_eq!(iolens_common::Syscall::from_x86_64_nr(nr64), Some(sc));
            // ia32's `select` (82) is the old one, taking an argument block;
            // its select(2) is `_newselect`, checked above.
            let ia32 = n32
                .iter()
                .find(|(_, n)| n.as_str() == sc.name() && n.as_str() != "select");
            if let Some((&nr32, _)) = ia32 {
                assert_eq!(
                    iolens_common::Syscall::i386_to_x86_64(nr32),
                    nr64,
                    "ia32 {} ({nr32})",
                    sc.name()
                );
            }
        }
    }

    /// The table sys_exit decodes numbers with says what the `Syscall`
    /// methods say, for every accounted call and nothing else: the kernel
    /// side sees only the packed bits.
    #[test]
    fn the_syscall_table_agrees_with_the_syscall_methods() {
        use iolens_common::{SYSCALL_INFO, Syscall, SyscallInfo};
        let mut accounted = 0;
        for (nr, info) in SYSCALL_INFO.iter().enumerate() {
            let Some(sc) = Syscall::from_x86_64_nr(nr as u64) else {
                assert_eq!(*info, SyscallInfo::NONE, "x86_64 {nr}");
                continue;
            };
            accounted += 1;
            assert_eq!(Syscall::from_u8(info.syscall()), Some(sc), "x86_64 {nr}");
            assert_eq!(info.shape(), sc.shape(), "{}", sc.name());
            assert_eq!(info.is_epoll(), sc.is_epoll(), "{}", sc.name());
            assert_eq!(
                info.counts_messages(),
                sc.counts_messages(),
                "{}",
                sc.name()
            );
        }
        assert_eq!(accounted, Syscall::ALL.len());
        // Numbers past the table are not accounted (the highest is 441).
        assert!((SYSCALL_INFO.len() as u64..1024).all(|nr| Syscall::from_x86_64_nr(nr).is_none()));
    }

    /// A program serves one probe (its variants may share it: one attach
    /// point or the other, never both), and probe names are unique.
    #[test]
    fn each_program_serves_one_probe() {
        for program in program_names() {
            let serving: Vec<&str> = PROBES
                .iter()
                .filter(|p| p.variants.iter().any(|v| v.program == program))
                .map(|p| p.name)
                .collect();
            assert_eq!(serving.len(), 1, "{program} serves {serving:?}");
        }
        let mut names: Vec<&str> = PROBES.iter().map(|p| p.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PROBES.len());
    }

    /// The programs in the eBPF object are exactly the probe list: a
    /// program added on the kernel side without a ProbeSpec would never
    /// attach, and a spec without its program fails at load.
    #[test]
    fn the_object_holds_exactly_the_listed_programs() {
        use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SymbolKind};
        assert!(
            !OBJECT.is_empty(),
            "built with AYA_BUILD_SKIP: the eBPF object is empty"
        );
        let file = object::File::parse(OBJECT).expect("the embedded eBPF object parses");
        let mut in_object: Vec<String> = file
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
            .filter(|s| {
                s.section_index()
                    .and_then(|i| file.section_by_index(i).ok())
                    .and_then(|sec| sec.name().ok().map(|n| n != ".text"))
                    .unwrap_or(false)
            })
            .filter_map(|s| s.name().ok().map(str::to_owned))
            .collect();
        in_object.sort_unstable();
        let mut listed: Vec<String> = program_names().into_iter().map(str::to_owned).collect();
        listed.sort_unstable();
        assert_eq!(in_object, listed, "programs in the object vs PROBES");
    }

    #[test]
    fn reads_field_offsets_from_tracefs_formats() {
        // 6.1's mm_filemap_add_to_page_cache, as tracefs prints it.
        let format = "name: mm_filemap_add_to_page_cache
ID: 512
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:unsigned long pfn;\toffset:8;\tsize:8;\tsigned:0;
\tfield:unsigned long i_ino;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned long index;\toffset:24;\tsize:8;\tsigned:0;
\tfield:dev_t s_dev;\toffset:32;\tsize:4;\tsigned:0;
\tfield:unsigned char order;\toffset:36;\tsize:1;\tsigned:0;
\tfield:char comm[16];\toffset:40;\tsize:16;\tsigned:0;
";
        assert_eq!(format_field_offset(format, "order"), Some(36));
        assert_eq!(format_field_offset(format, "s_dev"), Some(32));
        assert_eq!(format_field_offset(format, "comm"), Some(40));
        assert_eq!(format_field_offset(format, "ord"), None);
        assert_eq!(format_field_offset("garbage", "order"), None);
        // The running kernel agrees with what the kernel side assumed
        // before it read the format.
        if let Some(at) = tracefs_field_offset("io_uring", "io_uring_create", "ctx") {
            assert_eq!(at, 16);
        }
    }

    #[test]
    fn kfunc_placeholders_are_rewritten_in_place() {
        if OBJECT.is_empty() {
            assert!(
                std::env::var_os("CI").is_none_or(|v| v != "true"),
                "CI builds the eBPF object"
            );
            return;
        }
        let call = |insn: &[u8]| {
            (
                insn[0],
                insn[1],
                i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]),
            )
        };
        let count =
            |obj: &[u8], want: (u8, u8, i32)| obj.windows(8).filter(|w| call(w) == want).count();
        let before = count(OBJECT, (0x85, 0, RDONLY_CAST_PLACEHOLDER));
        assert!(before > 0, "the object calls bpf_rdonly_cast");
        let patched =
            patch_kfunc_calls(OBJECT, RDONLY_CAST_PLACEHOLDER, 0x1234_5678).expect("patched");
        assert_eq!(patched.len(), OBJECT.len());
        assert_eq!(count(&patched, (0x85, 0, RDONLY_CAST_PLACEHOLDER)), 0);
        assert_eq!(count(&patched, (0x85, 0x20, 0x1234_5678)), before);
        // Nothing else changed: per call, the register byte and the four
        // immediate bytes (0x7fff0001 and 0x12345678 differ in each).
        let changed = OBJECT.iter().zip(&patched).filter(|(a, b)| a != b).count();
        assert_eq!(changed, before * 5, "bytes changed");
        assert!(patch_kfunc_calls(b"not an ELF file", RDONLY_CAST_PLACEHOLDER, 1).is_err());
        assert!(
            patch_kfunc_calls(OBJECT, 0x7fff_0002, 1).is_err(),
            "no such calls"
        );
    }

    #[test]
    fn comm_keys_are_nul_padded_and_bounded() {
        let k = comm_key("nginx").expect("valid");
        assert_eq!(&k[..5], b"nginx");
        assert!(k[5..].iter().all(|&b| b == 0));
        assert!(comm_key("").is_none());
        assert!(comm_key("exactly16chars!!").is_none());
        assert!(comm_key("fifteen-chars-x").is_some());
        assert!(comm_key("a\0b").is_none());
    }
}
