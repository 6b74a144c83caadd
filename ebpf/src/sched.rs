use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::btf_tracepoint, programs::BtfTracePointContext,
};
use iolens_common::{ProcCounters, counter};

use crate::{
    filter::passes_filters,
    health::bump,
    kernel::{OFFSETS, load, rd},
    process::with_proc,
    slot::{CPU_SLOT, flush},
    thread::thread_state,
    waits::in_syscall,
};

/// `sched_switch(preempt, prev, next, prev_state)`, BTF-typed so prev and
/// next are loaded from directly. It runs in prev's context, right after the
/// kernel incremented prev's nvcsw (a voluntary switch) or nivcsw, and
/// charged prev's CPU time. All per-thread work happens for prev: what
/// happened while a thread was off CPU is settled at its next switch-out,
/// from the time the scheduler stamped at its switch-in.
#[btf_tracepoint(function = "sched_switch")]
pub fn iolens_sched_switch(ctx: BtfTracePointContext) -> i32 {
    let preempt: u64 = ctx.arg(0);
    let prev: *const u8 = ctx.arg(1);
    let next: *const u8 = ctx.arg(2);
    let valid = rd(&OFFSETS.valid) != 0 && !prev.is_null() && !next.is_null();
    // An argument since 5.18; before, the state is still in prev (a
    // constant the verifier knows picks one, so the other is never checked).
    let prev_state: u64 = if rd(&OFFSETS.switch_prev_state_arg) != 0 {
        ctx.arg(3)
    } else if valid {
        // SAFETY: a BTF-typed task pointer and a verifier-known offset.
        u64::from(unsafe { load::<u32>(prev, rd(&OFFSETS.task_state)) })
    } else {
        0
    };
    let (prev_tgid, prev_tid) = if valid {
        // SAFETY: a BTF-typed task pointer and verifier-known offsets.
        unsafe {
            (
                load::<u32>(prev, rd(&OFFSETS.task_tgid)),
                load::<u32>(prev, rd(&OFFSETS.task_pid)),
            )
        }
    } else {
        let pid_tgid = bpf_get_current_pid_tgid();
        ((pid_tgid >> 32) as u32, pid_tgid as u32)
    };
    let mut slot = match CPU_SLOT.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; sched_switch is not preempted, and a
        // sys_exit run it interrupted (if the kernel ever preempts one) has
        // `busy` set, so the slot is left alone.
        Some(s) if unsafe { (*s).busy } == 0 => Some(unsafe { &mut *s }),
        _ => None,
    };
    if prev_tid != 0 && passes_filters(prev_tgid) {
        let voluntary_guess = preempt & 1 == 0 && prev_state as u32 != 0;
        let d = switch_out(prev, prev_tid, valid, voluntary_guess);
        let add = |p: &mut ProcCounters| d.add_to(p);
        match slot.as_deref_mut() {
            Some(s) if s.tgid == prev_tgid => add(&mut s.proc),
            _ => with_proc(prev_tgid, true, add),
        }
    }
    // Another process (or idle) takes the CPU: what the slot holds goes to
    // the maps, so a process that is not running is fully accounted.
    let next_tgid: u32 = if valid {
        // SAFETY: a BTF-typed task pointer and a verifier-known offset.
        unsafe { load(next, rd(&OFFSETS.task_tgid)) }
    } else {
        0
    };
    if let Some(s) = slot
        && s.tgid != 0
        && (s.tgid != next_tgid || !valid)
    {
        flush(s);
    }
    0
}

/// What one switch adds to the switching-out process's counters.
#[derive(Default)]
pub(crate) struct SwitchDelta {
    vcsw: u64,
    ivcsw: u64,
    oncpu_ns: u64,
    sleep_ns: u64,
}

impl SwitchDelta {
    /// Adds these four, not all of ProcCounters (whose other seven would
    /// each be a load, an add of 0 and a store, at every switch).
    #[inline(always)]
    fn add_to(&self, p: &mut ProcCounters) {
        p.vcsw += self.vcsw;
        p.ivcsw += self.ivcsw;
        p.oncpu_ns += self.oncpu_ns;
        p.sleep_ns += self.sleep_ns;
    }
}

/// prev's side of a switch, as counter deltas: the switch (voluntary or
/// not), the CPU time since its last switch-out, and the sleep that ended
/// when this run began. `guess`: voluntary by the tracepoint's arguments,
/// for when the kernel's own count cannot be compared.
#[inline(always)]
pub(crate) fn switch_out(prev: *const u8, tid: u32, valid: bool, guess: bool) -> SwitchDelta {
    let mut d = SwitchDelta::default();
    let Some(t) = thread_state(prev, tid) else {
        bump(counter::OTHER_DROPS);
        if guess {
            d.vcsw = 1;
        } else {
            d.ivcsw = 1;
        }
        return d;
    };
    // SAFETY: prev is a BTF-typed task pointer (offsets verifier-known),
    // and `t` its state, which only its own context writes: its
    // switch-outs (serialised by the scheduler) and its syscall exits.
    unsafe {
        let (nvcsw, nivcsw, runtime): (u64, u64, u64) = if valid {
            (
                load(prev, rd(&OFFSETS.task_nvcsw)),
                load(prev, rd(&OFFSETS.task_nivcsw)),
                load(prev, rd(&OFFSETS.task_sum_exec)),
            )
        } else {
            (0, 0, 0)
        };
        // The kernel's own verdict: which of prev's counters it just
        // bumped. prev_state alone misses a task that went to sleep with a
        // signal pending (counted voluntary, but traced as running). The
        // state is the last switch-out's only if exactly one counter moved
        // by one since; else (a switch this did not see, say) it is stale.
        let (nv_seen, niv_seen) = ((*t).nvcsw_seen.wrapping_sub(1), (*t).nivcsw_seen);
        let by_nvcsw = nvcsw == nv_seen.wrapping_add(1) && nivcsw == niv_seen;
        let by_nivcsw = nivcsw == niv_seen.wrapping_add(1) && nvcsw == nv_seen;
        let seen = valid && (*t).nvcsw_seen != 0 && (by_nvcsw || by_nivcsw);
        let voluntary = if seen { by_nvcsw } else { guess };
        if voluntary {
            d.vcsw = 1;
        } else {
            d.ivcsw = 1;
        }
        // CPU time is the scheduler's own: sum_exec_runtime since the last
        // switch-out, or at the first one seen, since the thread was
        // picked (from its start, for a thread started under iolens).
        if valid {
            let base = if seen {
                (*t).runtime_seen
            } else {
                load(prev, rd(&OFFSETS.task_prev_sum_exec))
            };
            d.oncpu_ns = runtime.saturating_sub(base);
        }
        (*t).nvcsw_seen = if valid { nvcsw + 1 } else { 0 };
        (*t).nivcsw_seen = nivcsw;
        (*t).runtime_seen = runtime;
        let (sleep, wait) = ((*t).sleep_start, (*t).wait_sleep);
        if (sleep | wait) != 0 && seen && rd(&OFFSETS.sched_info_valid) != 0 {
            let arrival: u64 = load(prev, rd(&OFFSETS.task_last_arrival));
            if sleep != 0 {
                d.sleep_ns = arrival.saturating_sub(sleep);
            }
            if wait != 0 {
                (*t).wait_blocked += arrival.saturating_sub(wait);
            }
        }
        (*t).sleep_start = 0;
        (*t).wait_sleep = 0;
        if voluntary && valid && rd(&OFFSETS.sched_info_valid) != 0 {
            let now = rq_clock(prev);
            (*t).sleep_start = now;
            // Inside a syscall: the sleep is that call's, settled when it
            // returns (sys_exit knows which call it was).
            if now != 0 && in_syscall(prev) {
                (*t).wait_sleep = now;
            }
        }
    }
    d
}

/// ns now on the run queue's clock, which __schedule updated just before
/// this tracepoint and which stamped the threads' switch-ins: read through
/// the switching task, without a clock read (~70 ns here). 0 if a pointer
/// on the way is NULL. Only with `sched_info_valid`, which implies the
/// offsets.
#[inline(always)]
pub(crate) fn rq_clock(task: *const u8) -> u64 {
    // SAFETY: typed pointers (a tp_btf task argument, then the pointers
    // loaded from it) at verifier-known offsets.
    unsafe {
        let cfs_rq: *const u8 = load(task, rd(&OFFSETS.task_se_cfs_rq));
        if cfs_rq.is_null() {
            return 0;
        }
        let rq: *const u8 = load(cfs_rq, rd(&OFFSETS.cfs_rq_rq));
        if rq.is_null() {
            return 0;
        }
        load(rq, rd(&OFFSETS.rq_clock))
    }
}
