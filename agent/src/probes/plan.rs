//! Which variant of each probe the running kernel gets, and what each
//! probe family has on it.
//!
//! A probe is one signal (a syscall's exit, a folio dirtied, a CQE
//! posted); its variants are the ways of attaching it on different
//! kernels, best first. A variant fits when the kernel has its attach point
//! with the prototype the program was written for: read from the kernel's
//! BTF (`btf_trace_<tracepoint>` typedefs and function prototypes) and from
//! tracefs for classic tracepoints, never from the version number. The
//! loader tries the fitting ones in order; the first that loads and
//! attaches is used. What no variant gives is reported per family (
//! `iolens check`, the log, `iolens_family_info`), never left as zeroes.

use std::{fmt, path::Path};

use iolens_common::KernelOffsets;

use super::btf::Btf;

/// A probe family: one name in every layer (`ebpf/src/<family>.rs`,
/// `agent/src/metrics/<family>.rs`, `tests/tests/<family>.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Syscalls,
    Sched,
    Waits,
    PageCache,
    IoUring,
    Process,
    Block,
    Aio,
}

impl Family {
    pub const ALL: [Family; 8] = [
        Family::Syscalls,
        Family::Sched,
        Family::Waits,
        Family::PageCache,
        Family::IoUring,
        Family::Process,
        Family::Block,
        Family::Aio,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Syscalls => "syscalls",
            Family::Sched => "sched",
            Family::Waits => "waits",
            Family::PageCache => "page_cache",
            Family::IoUring => "io_uring",
            Family::Process => "process",
            Family::Block => "block",
            Family::Aio => "aio",
        }
    }

    /// The probes the family's metrics come from. Waits has none of its
    /// own: its counts are sys_exit's, its blocked time sched_switch's.
    pub fn probes(self) -> &'static [&'static str] {
        match self {
            Family::Syscalls => &["sys_exit"],
            Family::Sched => &["sched_switch"],
            Family::Waits => &["sys_exit", "sched_switch"],
            Family::PageCache => &[
                "fm_get_pages",
                "fm_map_pages",
                "fm_fault",
                "fm_add",
                "wb_dirty",
            ],
            Family::IoUring => &["uring_create", "uring_submit", "uring_complete"],
            Family::Process => &["exec", "exit"],
            Family::Block => &["block_start", "block_issue", "block_complete"],
            // io_submit and io_getevents, read at their exits.
            Family::Aio => &["sys_exit"],
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a program attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// A BTF-typed raw tracepoint (`tp_btf/<name>`): its arguments are
    /// typed pointers the program may load through directly, instead of a
    /// helper call per field.
    Btf(&'static str),
    /// A classic tracepoint `<category>:<name>`.
    Classic(&'static str, &'static str),
    /// A kernel function's entry or return through a BPF trampoline
    /// (typed arguments as tp_btf); where a tracepoint is missing.
    FEntry(&'static str),
    FExit(&'static str),
}

impl Attach {
    /// The mechanism, as `iolens check` and the metrics name it.
    pub fn kind(self) -> &'static str {
        match self {
            Attach::Btf(_) => "tp_btf",
            Attach::Classic(..) => "tracepoint",
            Attach::FEntry(_) => "fentry",
            Attach::FExit(_) => "fexit",
        }
    }
}

impl fmt::Display for Attach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attach::Btf(n) | Attach::FEntry(n) | Attach::FExit(n) => {
                write!(f, "{}/{n}", self.kind())
            }
            Attach::Classic(c, n) => write!(f, "tracepoint/{c}:{n}"),
        }
    }
}

/// What the attach point's prototype must look like for a variant.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    Any,
    /// Argument `n` (0-based, as the program reads it) has this C type.
    Arg(usize, &'static str),
}

/// One way of attaching a probe.
#[derive(Debug, Clone, Copy)]
pub struct Variant {
    /// Function name in the eBPF object.
    pub program: &'static str,
    pub attach: Attach,
    pub shape: Shape,
    /// What this variant cannot count that the first one can; "" if
    /// nothing.
    pub loses: &'static str,
}

/// One signal iolens observes, and its variants, best first.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSpec {
    /// Stable name (the `probe` label).
    pub name: &'static str,
    pub family: Family,
    /// What it counts: what is lost when no variant attaches.
    pub counts: &'static str,
    pub variants: &'static [Variant],
}

const fn v(program: &'static str, attach: Attach, shape: Shape) -> Variant {
    Variant {
        program,
        attach,
        shape,
        loses: "",
    }
}

use Attach::{Btf as TpBtf, Classic, FEntry, FExit};
use Shape::{Any, Arg};

/// Every probe iolens attaches, with its variants per kernel.
pub const PROBES: &[ProbeSpec] = &[
    ProbeSpec {
        name: "sys_exit",
        family: Family::Syscalls,
        counts: "syscalls, bytes and their paths, epoll/poll/select wakeups",
        variants: &[v("iolens_sys_exit", TpBtf("sys_exit"), Any)],
    },
    ProbeSpec {
        name: "sched_switch",
        family: Family::Sched,
        counts: "context switches, CPU and sleep time, epoll blocked time, off-CPU time by syscall",
        // `prev_state` is argument 3 since 5.18; before, the program loads
        // it from the task (`switch_prev_state_arg`).
        variants: &[v("iolens_sched_switch", TpBtf("sched_switch"), Any)],
    },
    ProbeSpec {
        name: "exec",
        family: Family::Process,
        counts: "process names at exec and process starts",
        variants: &[v(
            "iolens_exec",
            Classic("sched", "sched_process_exec"),
            Any,
        )],
    },
    ProbeSpec {
        name: "exit",
        family: Family::Process,
        counts: "process exits (exited processes keep their counts until --exit-ttl)",
        variants: &[v(
            "iolens_exit",
            Classic("sched", "sched_process_exit"),
            Any,
        )],
    },
    ProbeSpec {
        name: "fm_get_pages",
        family: Family::PageCache,
        counts: "page-cache lookups of reads (and so the hit ratio)",
        variants: &[
            v("iolens_fm_get_pages", TpBtf("mm_filemap_get_pages"), Any),
            // 6.1: filemap_get_pages(iocb, iter, fbatch); from 6.2 its
            // second argument is a count, and the tracepoint exists.
            v(
                "iolens_fm_get_pages_fexit",
                FExit("filemap_get_pages"),
                Arg(1, "struct iov_iter *"),
            ),
        ],
    },
    ProbeSpec {
        name: "fm_map_pages",
        family: Family::PageCache,
        counts: "pages mapped by fault-around",
        variants: &[
            v("iolens_fm_map_pages", TpBtf("mm_filemap_map_pages"), Any),
            v(
                "iolens_fm_map_pages_fentry",
                FEntry("filemap_map_pages"),
                Arg(2, "long unsigned int"),
            ),
        ],
    },
    ProbeSpec {
        name: "fm_fault",
        family: Family::PageCache,
        counts: "page faults on file mappings",
        variants: &[
            v("iolens_fm_fault", TpBtf("mm_filemap_fault"), Any),
            v(
                "iolens_fm_fault_fentry",
                FEntry("filemap_fault"),
                Arg(0, "struct vm_fault *"),
            ),
        ],
    },
    ProbeSpec {
        name: "fm_add",
        family: Family::PageCache,
        counts: "pages added to the page cache (misses)",
        variants: &[v(
            "iolens_fm_add",
            Classic("filemap", "mm_filemap_add_to_page_cache"),
            Any,
        )],
    },
    ProbeSpec {
        name: "wb_dirty",
        family: Family::PageCache,
        counts: "pages dirtied",
        variants: &[
            v(
                "iolens_wb_dirty",
                TpBtf("writeback_dirty_folio"),
                Arg(0, "struct folio *"),
            ),
            // Before folios (5.15): a page each (the loader turns the
            // folio sizing off for it).
            v(
                "iolens_wb_dirty",
                TpBtf("writeback_dirty_page"),
                Arg(0, "struct page *"),
            ),
        ],
    },
    ProbeSpec {
        name: "uring_create",
        family: Family::IoUring,
        counts: "ring owners (work of io-wq and SQPOLL threads attributed to their process) and rings created",
        variants: &[v(
            "iolens_uring_create",
            Classic("io_uring", "io_uring_create"),
            Any,
        )],
    },
    ProbeSpec {
        name: "uring_submit",
        family: Family::IoUring,
        counts: "io_uring SQEs submitted",
        variants: &[
            v(
                "iolens_uring_submit",
                TpBtf("io_uring_submit_req"),
                Arg(0, "struct io_kiocb *"),
            ),
            // 5.18 to 6.4 (Debian 12's 6.1): the same request first.
            v(
                "iolens_uring_submit",
                TpBtf("io_uring_submit_sqe"),
                Arg(0, "struct io_kiocb *"),
            ),
            // Before 5.18 (5.15): ring and opcode are arguments.
            v(
                "iolens_uring_submit_args",
                TpBtf("io_uring_submit_sqe"),
                Arg(2, "u8"),
            ),
        ],
    },
    ProbeSpec {
        name: "uring_complete",
        family: Family::IoUring,
        counts: "io_uring CQEs, failures and bytes per opcode",
        variants: &[
            v(
                "iolens_uring_complete",
                TpBtf("io_uring_complete"),
                Arg(2, "struct io_uring_cqe *"),
            ),
            // 5.19 to 6.12 (Debian's 6.1 and 6.12): the result is an
            // argument.
            v(
                "iolens_uring_complete_res",
                TpBtf("io_uring_complete"),
                Arg(3, "int"),
            ),
            // Before 5.18 (5.15): no request argument.
            Variant {
                loses: "bytes and failures per opcode of io_uring completions (the kernel's io_uring_complete has no request to read the opcode from): all under op=\"unknown\"",
                ..v(
                    "iolens_uring_complete_noreq",
                    TpBtf("io_uring_complete"),
                    Arg(2, "int"),
                )
            },
        ],
    },
    ProbeSpec {
        name: "block_start",
        family: Family::Block,
        counts: "the submitter of block requests queued before their issue (without it they go to the task that issues them, a kworker when the queue was busy)",
        variants: &[
            // 6.5+: fires in blk_mq_bio_to_request, in the submitter's
            // submit_bio, for every request made from a bio.
            v(
                "iolens_block_start",
                TpBtf("block_io_start"),
                Arg(0, "struct request *"),
            ),
            // 6.1: the scheduler insert (elevator path and plug flushes,
            // in the submitter's context).
            v(
                "iolens_block_start",
                TpBtf("block_rq_insert"),
                Arg(0, "struct request *"),
            ),
        ],
    },
    ProbeSpec {
        name: "block_issue",
        family: Family::Block,
        counts: "block request latency (issue to completion), and the owner of requests issued directly",
        variants: &[v(
            "iolens_block_issue",
            TpBtf("block_rq_issue"),
            Arg(0, "struct request *"),
        )],
    },
    ProbeSpec {
        name: "block_complete",
        family: Family::Block,
        counts: "block requests and bytes per process, device and op",
        variants: &[v(
            "iolens_block_complete",
            TpBtf("block_rq_complete"),
            Arg(2, "unsigned int"),
        )],
    },
];

/// Every program in the object (a program may serve several variants).
pub fn program_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = PROBES
        .iter()
        .flat_map(|p| p.variants.iter().map(|v| v.program))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// What the running kernel offers to choose from.
pub struct KernelFeatures<'a> {
    pub btf: Option<&'a Btf>,
    /// The mounted tracefs (its `events/` directory lists the classic
    /// tracepoints).
    pub tracefs: &'a Path,
}

/// The variants of a probe that fit this kernel, best first, and those
/// that do not, with why.
pub struct Fitting {
    pub fit: Vec<&'static Variant>,
    pub not: Vec<(&'static Variant, String)>,
}

impl KernelFeatures<'_> {
    pub fn sort(&self, spec: &'static ProbeSpec) -> Fitting {
        let mut f = Fitting {
            fit: Vec::new(),
            not: Vec::new(),
        };
        for v in spec.variants {
            match self.fits(v) {
                Ok(()) => f.fit.push(v),
                Err(why) => f.not.push((v, why)),
            }
        }
        f
    }

    /// Whether `v` fits this kernel; the reason when not.
    pub fn fits(&self, v: &Variant) -> Result<(), String> {
        let args = match v.attach {
            Attach::Classic(category, name) => {
                return if self
                    .tracefs
                    .join("events")
                    .join(category)
                    .join(name)
                    .is_dir()
                {
                    Ok(())
                } else {
                    Err(format!("no tracepoint {category}:{name} in tracefs"))
                };
            }
            Attach::Btf(name) => {
                let btf = self.btf.ok_or("no kernel BTF (/sys/kernel/btf/vmlinux)")?;
                btf.tracepoint_args(name)
                    .ok_or_else(|| format!("no tracepoint {name} in the kernel's BTF"))?
            }
            Attach::FEntry(name) | Attach::FExit(name) => {
                let btf = self.btf.ok_or("no kernel BTF (/sys/kernel/btf/vmlinux)")?;
                btf.function_args(name)
                    .ok_or_else(|| format!("no function {name} in the kernel's BTF"))?
            }
        };
        match v.shape {
            Shape::Any => Ok(()),
            Shape::Arg(n, ty) if args.get(n).is_some_and(|a| a == ty) => Ok(()),
            Shape::Arg(n, ty) => Err(format!(
                "{}({}): argument {n} is not {ty}",
                v.attach,
                args.join(", ")
            )),
        }
    }
}

/// How one probe ended up on this kernel.
#[derive(Debug, Clone)]
pub struct Choice {
    /// The variant attached, if one did.
    pub variant: Option<&'static Variant>,
    /// Each variant passed over, with why (does not fit, or failed to
    /// load or attach), in order.
    pub passed_over: Vec<(&'static Variant, String)>,
}

/// One family on this kernel: how each of its probes is attached and
/// what it loses.
#[derive(Debug, Clone)]
pub struct FamilyReport {
    pub family: Family,
    /// (probe, how it is attached here), or None.
    pub probes: Vec<(&'static str, Option<Attach>)>,
    /// What the family cannot count here, and why; empty when complete.
    pub lost: Vec<String>,
}

impl FamilyReport {
    pub fn status(&self) -> &'static str {
        if self.probes.iter().all(|(_, a)| a.is_none()) {
            "unavailable"
        } else if self.lost.is_empty() {
            "complete"
        } else {
            "degraded"
        }
    }

    /// Each probe and where it is attached (`-`: nowhere), as the log and
    /// `iolens check` print it.
    pub fn attachments(&self) -> String {
        self.probes
            .iter()
            .map(|(p, a)| match a {
                Some(a) => format!("{p} {a}"),
                None => format!("{p} -"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The mechanisms in use, e.g. `fexit+fentry+tracepoint+tp_btf`.
    pub fn mechanism(&self) -> String {
        let mut kinds: Vec<&str> = Vec::new();
        for (_, a) in &self.probes {
            if let Some(a) = a
                && !kinds.contains(&a.kind())
            {
                kinds.push(a.kind());
            }
        }
        if kinds.is_empty() {
            "none".to_owned()
        } else {
            kinds.join("+")
        }
    }
}

/// A reason cut to what a report line can carry: its first line and, for
/// a verifier log, the line that says why (the last before the verifier's
/// statistics; the whole log is in the agent's warning).
pub fn short(reason: &str) -> String {
    const MAX: usize = 160;
    let cut = |line: &str| {
        if line.chars().count() <= MAX {
            line.to_owned()
        } else {
            let cut: String = line.chars().take(MAX).collect();
            format!("{cut}…")
        }
    };
    let first = reason.lines().next().unwrap_or("");
    let why = reason
        .lines()
        .skip(1)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .find(|l| {
            let l = l.trim();
            !l.is_empty()
                && !l.starts_with(':')
                && !l.starts_with("verification time")
                && !l.starts_with("stack depth")
                && !l.starts_with("processed ")
        });
    match (first.split_once("Verifier output:"), why) {
        (Some((head, _)), Some(why)) => format!("{}verifier: {}", cut(head), cut(why.trim())),
        _ => cut(first),
    }
}

/// The per-family report from each probe's choice (`choices` in
/// [`PROBES`] order) and the offsets the programs got.
pub fn report(choices: &[Choice], offsets: &KernelOffsets) -> Vec<FamilyReport> {
    let choice = |name: &str| {
        PROBES
            .iter()
            .position(|p| p.name == name)
            .and_then(|i| Some((&PROBES[i], choices.get(i)?)))
    };
    Family::ALL
        .iter()
        .map(|&family| {
            let mut probes = Vec::new();
            let mut lost = Vec::new();
            for &name in family.probes() {
                let Some((spec, c)) = choice(name) else {
                    continue;
                };
                probes.push((name, c.variant.map(|v| v.attach)));
                match c.variant {
                    Some(v) if !v.loses.is_empty() => lost.push(v.loses.to_owned()),
                    Some(_) => {}
                    None => {
                        let why: Vec<String> = c
                            .passed_over
                            .iter()
                            .map(|(v, why)| format!("{}: {}", v.attach, short(why)))
                            .collect();
                        lost.push(format!("{} ({name}: {})", spec.counts, why.join("; ")));
                    }
                }
            }
            lost.extend(offset_losses(family, offsets, choices));
            FamilyReport {
                family,
                probes,
                lost,
            }
        })
        .collect()
}

/// What a family loses to struct offsets the kernel's BTF does not give.
fn offset_losses(family: Family, o: &KernelOffsets, choices: &[Choice]) -> Vec<String> {
    let mut lost = Vec::new();
    let attached_to = |probe: &str| {
        PROBES
            .iter()
            .position(|p| p.name == probe)
            .and_then(|i| choices.get(i)?.variant)
            .map(|v| v.attach)
    };
    match family {
        Family::Syscalls if o.valid == 0 => lost.push(
            "the path of bytes (file, socket, pipe, ...): all `unknown`, the kernel's BTF gave no usable struct offsets".to_owned(),
        ),
        Family::Sched | Family::Waits if o.valid != 0 && o.sched_info_valid == 0 => lost.push(
            match family {
                Family::Sched => "sleep time",
                _ => "epoll blocked time and off-CPU time by syscall",
            }
            .to_owned()
                + ": no task_struct.sched_info.last_arrival (CONFIG_SCHED_INFO) or run-queue clock (CONFIG_FAIR_GROUP_SCHED) in the kernel's BTF",
        ),
        Family::Sched | Family::Waits if o.valid == 0 => lost.push(
            "sleep and blocked time, voluntary/involuntary split: the kernel's BTF gave no usable struct offsets".to_owned(),
        ),
        Family::PageCache
            if o.folio_valid == 0
                && attached_to("wb_dirty") == Some(Attach::Btf("writeback_dirty_folio")) =>
        {
            lost.push(
                "the size of dirtied large folios: each counts one page (no folio order in the kernel's BTF)".to_owned(),
            )
        }
        Family::Block if o.block_valid == 0 => lost.push(
            "block devices and ops: all device=\"unknown\", op=\"other\" (no request.q/cmd_flags/__data_len, request_queue.disk or gendisk.major/first_minor in the kernel's BTF)".to_owned(),
        ),
        Family::IoUring if o.uring_valid == 0 => lost.push(
            "io_uring opcodes (and bytes per opcode): no struct io_kiocb in the kernel's BTF".to_owned(),
        ),
        _ => {}
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_probe_is_listed_once() {
        for f in Family::ALL {
            for p in f.probes() {
                assert_eq!(
                    PROBES.iter().filter(|s| s.name == *p).count(),
                    1,
                    "{f}: probe {p}"
                );
            }
        }
        for spec in PROBES {
            assert!(
                spec.family.probes().contains(&spec.name),
                "{} is not among {}'s probes",
                spec.name,
                spec.family
            );
            assert!(!spec.variants.is_empty(), "{}: no variant", spec.name);
        }
    }

    /// The choices on the kernels of the matrix, from their real BTF
    /// prototypes (as `bpftool btf dump` prints them for Debian's 6.1 and
    /// 6.12 and this machine's 6.18), and on 5.15's as its headers declare
    /// them: each probe gets the variant written for its prototype.
    #[test]
    fn variants_fit_the_prototypes_they_were_written_for() {
        let fits = |v: &Variant, args: &[&str]| match v.shape {
            Shape::Any => true,
            Shape::Arg(n, ty) => args.get(n) == Some(&ty),
        };
        let pick = |probe: &str, point: &str, args: &[&str]| -> Option<&'static str> {
            let spec = PROBES.iter().find(|p| p.name == probe).expect("probe");
            spec.variants
                .iter()
                .find(|v| {
                    let name = match v.attach {
                        Attach::Btf(n) | Attach::FEntry(n) | Attach::FExit(n) => n,
                        Attach::Classic(_, n) => n,
                    };
                    name == point && fits(v, args)
                })
                .map(|v| v.program)
        };
        // 6.18
        assert_eq!(
            pick(
                "uring_complete",
                "io_uring_complete",
                &["struct io_ring_ctx *", "void *", "struct io_uring_cqe *"]
            ),
            Some("iolens_uring_complete")
        );
        // 6.1 and 6.12
        let res = [
            "void *",
            "void *",
            "u64",
            "int",
            "unsigned int",
            "u64",
            "u64",
        ];
        assert_eq!(
            pick("uring_complete", "io_uring_complete", &res),
            Some("iolens_uring_complete_res")
        );
        assert_eq!(
            pick(
                "uring_submit",
                "io_uring_submit_sqe",
                &["struct io_kiocb *", "bool"]
            ),
            Some("iolens_uring_submit")
        );
        assert_eq!(
            pick(
                "fm_get_pages",
                "filemap_get_pages",
                &[
                    "struct kiocb *",
                    "struct iov_iter *",
                    "struct folio_batch *"
                ]
            ),
            Some("iolens_fm_get_pages_fexit")
        );
        // 6.12's filemap_get_pages takes a count: the tracepoint is there.
        assert_eq!(
            pick(
                "fm_get_pages",
                "filemap_get_pages",
                &["struct kiocb *", "size_t", "struct folio_batch *", "bool"]
            ),
            None
        );
        // Block: the owner at block_io_start (6.12, 6.18), else at the
        // scheduler insert (6.1); the completion's byte count is arg 2.
        let rq = ["struct request *"];
        assert_eq!(
            pick("block_start", "block_io_start", &rq),
            Some("iolens_block_start")
        );
        assert_eq!(
            pick("block_start", "block_rq_insert", &rq),
            Some("iolens_block_start")
        );
        assert_eq!(
            pick(
                "block_complete",
                "block_rq_complete",
                &["struct request *", "blk_status_t", "unsigned int"]
            ),
            Some("iolens_block_complete")
        );
        // 5.15, on paper.
        assert_eq!(
            pick(
                "uring_submit",
                "io_uring_submit_sqe",
                &["void *", "void *", "u8", "u64", "u32", "bool", "bool"]
            ),
            Some("iolens_uring_submit_args")
        );
        assert_eq!(
            pick(
                "uring_complete",
                "io_uring_complete",
                &["void *", "u64", "int", "unsigned int"]
            ),
            Some("iolens_uring_complete_noreq")
        );
        assert_eq!(
            pick(
                "wb_dirty",
                "writeback_dirty_page",
                &["struct page *", "struct address_space *"]
            ),
            Some("iolens_wb_dirty")
        );
    }

    #[test]
    fn a_verifier_log_is_cut_to_why() {
        let log = "load: the BPF_PROG_LOAD syscall returned Permission denied (os error 13). Verifier output: Func#2 is safe for any args
Validating f() func#4...
1991: (79) r1 = *(u64 *)(r2 +0)
R2 invalid mem access 'scalar'
verification time 17794 usec
stack depth 0+0
processed 213 insns (limit 1000000) max_states_per_insn 0
: Permission denied (os error 13)";
        assert_eq!(
            short(log),
            "load: the BPF_PROG_LOAD syscall returned Permission denied (os error 13). verifier: R2 invalid mem access 'scalar'"
        );
        assert_eq!(
            short("no tracepoint x in tracefs"),
            "no tracepoint x in tracefs"
        );
    }

    #[test]
    fn reports_what_is_lost_and_why() {
        let choices: Vec<Choice> = PROBES
            .iter()
            .map(|p| Choice {
                variant: (p.name != "fm_fault").then_some(&p.variants[0]),
                passed_over: if p.name == "fm_fault" {
                    p.variants
                        .iter()
                        .map(|v| (v, "no such thing\nmore".to_owned()))
                        .collect()
                } else {
                    Vec::new()
                },
            })
            .collect();
        let offsets = KernelOffsets {
            valid: 1,
            sched_info_valid: 1,
            folio_valid: 1,
            uring_valid: 1,
            block_valid: 1,
            ..KernelOffsets::default()
        };
        let r = report(&choices, &offsets);
        let pc = r
            .iter()
            .find(|f| f.family == Family::PageCache)
            .expect("page_cache");
        assert_eq!(pc.status(), "degraded");
        assert_eq!(
            pc.lost,
            vec![
                "page faults on file mappings (fm_fault: tp_btf/mm_filemap_fault: no such thing; fentry/filemap_fault: no such thing)"
            ]
        );
        assert_eq!(pc.mechanism(), "tp_btf+tracepoint");
        for f in r.iter().filter(|f| f.family != Family::PageCache) {
            assert_eq!(f.status(), "complete", "{f:?}");
        }
        let none = report(
            &PROBES
                .iter()
                .map(|_| Choice {
                    variant: None,
                    passed_over: Vec::new(),
                })
                .collect::<Vec<_>>(),
            &KernelOffsets::default(),
        );
        assert!(none.iter().all(|f| f.status() == "unavailable"));
        assert!(none.iter().all(|f| f.mechanism() == "none"));
    }
}
