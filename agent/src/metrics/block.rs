//! The block family's exposition: bytes and requests completed by disks,
//! per owning process, device and op; what no owner was seen for; and the
//! issue-to-completion latency by process name and op.

use iolens_common::{BLOCK_UNATTRIBUTED, WAIT_BUCKETS, block_op_name, dev_major, dev_minor};

use super::{Family, Kind, Mode, Tracker, comm_string};

/// How the owner of a request is found, said once for every block family.
macro_rules! owner {
    () => {
        "Owner: the process that submitted the request (the task in whose context it was started, inserted or issued): reads and O_DIRECT I/O count for the process that made them, readahead for the reader, writeback for the flush workers (kworker) that submit it, journal writes for jbd2; iolens does not guess an owner it did not see."
    };
}

/// The name of block device `dev` (a dev_t, major << 20 | minor): the
/// /sys/dev/block/MAJ:MIN link's target, else `MAJ:MIN`; `unknown` for
/// 0 (the kernel's BTF gave no way to read the device).
pub(super) fn device_name(dev: u32) -> String {
    if dev == 0 {
        return "unknown".to_owned();
    }
    let id = format!("{}:{}", dev_major(dev), dev_minor(dev));
    std::fs::read_link(format!("/sys/dev/block/{id}"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or(id)
}

impl Tracker {
    fn device(&self, dev: u32) -> &str {
        self.devices.get(&dev).map_or("unknown", String::as_str)
    }

    pub(super) fn block_families<'m>(&self, mode: Mode<'m>) -> Vec<Family<'m>> {
        let mut bytes = Family::new(
            "iolens_block_bytes_total",
            concat!(
                "Bytes block devices completed for the process (block_rq_complete), by device and op (read, write, flush, discard, other): the data the disk moved by DMA. ",
                owner!()
            ),
            Kind::Counter,
        )
        .with_mode(mode);
        let mut requests = Family::new(
            "iolens_block_requests_total",
            concat!(
                "Block requests completed for the process, by device and op (merged bios count once). An fsync's cache flush is one flush request of the process (0 bytes); the flush the kernel then sends the device, one for several waiting, counts for the kworker that issues it. ",
                owner!()
            ),
            Kind::Counter,
        )
        .with_mode(mode);
        let mut un_bytes = Family::new(
            "iolens_block_unattributed_bytes_total",
            "Bytes of block requests completed with no owner seen (started before iolens attached, or LRU-evicted from the in-flight table), by device and op: counted here, not guessed.",
            Kind::Counter,
        )
        .with_mode(mode);
        let mut un_requests = Family::new(
            "iolens_block_unattributed_requests_total",
            "Block requests completed with no owner seen, by device and op. Also the second, data-less completion the kernel's flush sequence makes of a write it had to follow with a cache flush (FUA emulation), as a 0-byte flush.",
            Kind::Counter,
        )
        .with_mode(mode);
        for (key, series) in &self.bseries {
            let t = series.total();
            let labels = [
                ("device", self.device(key.dev)),
                ("op", block_op_name(key.op)),
            ];
            if key.tgid == BLOCK_UNATTRIBUTED {
                un_bytes.sample(&labels, t.bytes as f64);
                un_requests.sample(&labels, t.requests as f64);
            } else {
                bytes.proc_sample(self, key.tgid, &labels, t.bytes as f64);
                requests.proc_sample(self, key.tgid, &labels, t.requests as f64);
            }
        }
        vec![
            bytes,
            requests,
            un_bytes,
            un_requests,
            self.block_histogram(mode),
        ]
    }

    fn block_histogram<'m>(&self, mode: Mode<'m>) -> Family<'m> {
        let mut f = Family::new(
            "iolens_block_latency_seconds",
            "Time from a block request's issue to the driver (block_rq_issue) to its completion, by the owner's process name and op (log2 buckets); requests never issued themselves (an fsync's flush, done by the kernel's own flush request) and requests with no owner seen are not in it.",
            Kind::Histogram,
        )
        .with_mode(mode);
        let mut buckets = Vec::with_capacity(WAIT_BUCKETS);
        for (key, slots) in &self.block_hist {
            f.log2_histogram(
                &[
                    ("comm", comm_string(&key.comm).as_str()),
                    ("op", block_op_name(key.op)),
                ],
                slots,
                &mut buckets,
            );
        }
        f
    }
}
