//! Struct member offsets from the running kernel's BTF.
//!
//! The kernel side classifies an fd by walking `task_struct -> files ->
//! fdtable -> file -> inode` with probe reads. The offsets of those fields
//! change between kernel builds, so they are read here, once, from
//! `/sys/kernel/btf/vmlinux` and handed to the programs as a global: CO-RE
//! done by hand for the few fields walked, without a compile-time vmlinux.h.
//!
//! Only what that needs is parsed: the type section's records (to skip them)
//! and struct/union members (to resolve a field, looking through anonymous
//! members), and function prototypes: which tracepoints and functions this
//! kernel has, with what arguments, picks each probe's variant
//! (`super::plan`).

use std::{collections::HashMap, path::Path};

use iolens_common::KernelOffsets;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("BTF has no struct `{0}`")]
    NoStruct(String),
    #[error("BTF struct `{0}` has no member `{1}`")]
    NoMember(String, String),
    #[error("BTF has no enumerator `{0}`")]
    NoEnumerator(String),
}

const BTF_MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
struct Member {
    name: u32,
    ty: u32,
    bit_offset: u32,
}

#[derive(Debug, Clone)]
struct Type {
    name: u32,
    kind: u32,
    /// Referenced type for typedef/const/volatile/… (the `size_or_type` word).
    ty: u32,
    members: Vec<Member>,
}

/// A parsed BTF blob: enough to find struct members.
pub struct Btf {
    strings: Vec<u8>,
    /// Index 0 is BTF's "void"; type ids index this directly.
    types: Vec<Type>,
    structs_by_name: HashMap<String, u32>,
    /// Every enumerator: (name offset, value).
    enumerators: Vec<(u32, i64)>,
}

fn u16_at(b: &[u8], off: usize) -> Result<u16, BtfError> {
    b.get(off..off + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(BtfError::Malformed("truncated"))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Btf::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        if u16_at(data, 0)? != BTF_MAGIC {
            // Big-endian BTF would need byte swapping; iolens targets x86_64.
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_sec = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();

        let mut types = vec![Type {
            name: 0,
            kind: 0,
            ty: 0,
            members: Vec::new(),
        }];
        let mut enumerators = Vec::new();
        let mut off = 0;
        while off < types_sec.len() {
            let name = u32_at(types_sec, off)?;
            let info = u32_at(types_sec, off + 4)?;
            let ty = u32_at(types_sec, off + 8)?;
            off += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => off += 4,
                KIND_ARRAY => off += 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = off + i * 12;
                        let raw = u32_at(types_sec, m + 8)?;
                        members.push(Member {
                            name: u32_at(types_sec, m)?,
                            ty: u32_at(types_sec, m + 4)?,
                            // With kind_flag the top byte is a bitfield size.
                            bit_offset: if kind_flag { raw & 0x00ff_ffff } else { raw },
                        });
                    }
                    off += vlen * 12;
                }
                KIND_ENUM => {
                    for i in 0..vlen {
                        let e = off + i * 8;
                        let val = u32_at(types_sec, e + 4)? as i32;
                        enumerators.push((u32_at(types_sec, e)?, i64::from(val)));
                    }
                    off += vlen * 8;
                }
                KIND_ENUM64 => {
                    for i in 0..vlen {
                        let e = off + i * 12;
                        let lo = u64::from(u32_at(types_sec, e + 4)?);
                        let hi = u64::from(u32_at(types_sec, e + 8)?);
                        enumerators.push((u32_at(types_sec, e)?, (hi << 32 | lo) as i64));
                    }
                    off += vlen * 12;
                }
                KIND_FUNC_PROTO => {
                    // Parameters: (name, type), kept as members.
                    for i in 0..vlen {
                        let m = off + i * 8;
                        members.push(Member {
                            name: u32_at(types_sec, m)?,
                            ty: u32_at(types_sec, m + 4)?,
                            bit_offset: 0,
                        });
                    }
                    off += vlen * 8;
                }
                KIND_DATASEC => off += vlen * 12,
                _ => {}
            }
            types.push(Type {
                name,
                kind,
                ty,
                members,
            });
        }

        let mut btf = Btf {
            strings,
            types,
            structs_by_name: HashMap::new(),
            enumerators,
        };
        for (id, t) in btf.types.iter().enumerate() {
            // A full definition has members; forward declarations do not.
            if t.kind == KIND_STRUCT && t.name != 0 && !t.members.is_empty() {
                let name = btf.name(t.name).to_owned();
                btf.structs_by_name.entry(name).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// Follows typedef/const/volatile/restrict/type_tag to the real type.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.ty
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// Bit offset of `member` inside `t`, looking through anonymous
    /// struct/union members as C does.
    fn member_bits(&self, t: &Type, member: &str, depth: u32) -> Option<u32> {
        if depth > 8 {
            return None;
        }
        for m in &t.members {
            if m.name != 0 {
                if self.name(m.name) == member {
                    return Some(m.bit_offset);
                }
                continue;
            }
            let inner = self.resolve(m.ty)?;
            if matches!(inner.kind, KIND_STRUCT | KIND_UNION)
                && let Some(bits) = self.member_bits(inner, member, depth + 1)
            {
                return Some(m.bit_offset + bits);
            }
        }
        None
    }

    /// The value of the enumerator `name` (enumerator names are global in C).
    pub fn enum_value(&self, name: &str) -> Result<i64, BtfError> {
        self.enumerators
            .iter()
            .find(|&&(n, _)| self.name(n) == name)
            .map(|&(_, v)| v)
            .ok_or_else(|| BtfError::NoEnumerator(name.to_owned()))
    }

    /// The type id of struct `name` (its full definition).
    pub fn struct_id(&self, name: &str) -> Result<u32, BtfError> {
        self.structs_by_name
            .get(name)
            .copied()
            .ok_or_else(|| BtfError::NoStruct(name.to_owned()))
    }

    /// The type id of function `name` (kfuncs are called by this id).
    pub fn func_id(&self, name: &str) -> Option<u32> {
        self.types
            .iter()
            .position(|t| t.kind == KIND_FUNC && self.name(t.name) == name)
            .map(|id| id as u32)
    }

    /// The argument types of tracepoint `name` as its BTF prototype
    /// `btf_trace_<name>` has them (without the leading `void *` of the
    /// probe's data), spelled as C does: `struct io_kiocb *`, `u64`,
    /// `int`. None: this kernel has no such tracepoint.
    pub fn tracepoint_args(&self, name: &str) -> Option<Vec<String>> {
        let typedef = format!("btf_trace_{name}");
        let t = self
            .types
            .iter()
            .find(|t| t.kind == KIND_TYPEDEF && self.name(t.name) == typedef)?;
        let ptr = self
            .types
            .get(t.ty as usize)
            .filter(|p| p.kind == KIND_PTR)?;
        let proto = self
            .types
            .get(ptr.ty as usize)
            .filter(|p| p.kind == KIND_FUNC_PROTO)?;
        Some(
            proto
                .members
                .iter()
                .skip(1)
                .map(|m| self.type_name(m.ty, 0))
                .collect(),
        )
    }

    /// The parameter types of kernel function `name`, if its BTF has it
    /// (what fentry and fexit attach to), spelled as in
    /// [`Btf::tracepoint_args`].
    pub fn function_args(&self, name: &str) -> Option<Vec<String>> {
        let f = self
            .types
            .iter()
            .find(|t| t.kind == KIND_FUNC && self.name(t.name) == name)?;
        let proto = self
            .types
            .get(f.ty as usize)
            .filter(|p| p.kind == KIND_FUNC_PROTO)?;
        Some(
            proto
                .members
                .iter()
                .map(|m| self.type_name(m.ty, 0))
                .collect(),
        )
    }

    /// A type as C spells it (typedef names kept, not resolved).
    fn type_name(&self, id: u32, depth: u32) -> String {
        let Some(t) = self.types.get(id as usize).filter(|_| depth < 16) else {
            return "?".to_owned();
        };
        let name = self.name(t.name);
        match t.kind {
            0 if id == 0 => "void".to_owned(),
            KIND_PTR => {
                let inner = self.type_name(t.ty, depth + 1);
                if inner.ends_with('*') {
                    format!("{inner}*")
                } else {
                    format!("{inner} *")
                }
            }
            KIND_STRUCT => format!("struct {name}"),
            KIND_UNION => format!("union {name}"),
            KIND_ENUM | KIND_ENUM64 => format!("enum {name}"),
            KIND_FWD => format!("struct {name}"),
            KIND_CONST => format!("const {}", self.type_name(t.ty, depth + 1)),
            KIND_VOLATILE => format!("volatile {}", self.type_name(t.ty, depth + 1)),
            KIND_RESTRICT | KIND_TYPE_TAG => self.type_name(t.ty, depth + 1),
            KIND_FUNC_PROTO => "fn".to_owned(),
            _ => name.to_owned(),
        }
    }

    /// Byte offset of `strukt.member`.
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let id = *self
            .structs_by_name
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))?;
        let t = &self.types[id as usize];
        let bits = self
            .member_bits(t, member, 0)
            .ok_or_else(|| BtfError::NoMember(strukt.to_owned(), member.to_owned()))?;
        Ok(bits / 8)
    }

    /// The offsets the kernel side walks (see [`KernelOffsets`]).
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        // The run queue's clock, reached from a task: needs the group
        // scheduler's `sched_entity.cfs_rq` (CONFIG_FAIR_GROUP_SCHED).
        let se = self.member_offset("task_struct", "se")?;
        let rq_clock = (|| -> Result<(u32, u32, u32), BtfError> {
            Ok((
                se + self.member_offset("sched_entity", "cfs_rq")?,
                self.member_offset("cfs_rq", "rq")?,
                self.member_offset("rq", "clock")?,
            ))
        })();
        // A folio's size when PG_head is set in `flags` (folio_order() in
        // include/linux/mm.h): its own byte `_folio_order` in 6.1, the low
        // byte of `_flags_1` since 6.3.
        let folio = (|| -> Result<(u32, u32, u32), BtfError> {
            let pg_head = self.enum_value("PG_head")?;
            Ok((
                self.member_offset("folio", "flags")?,
                self.member_offset("folio", "_folio_order")
                    .or_else(|_| self.member_offset("folio", "_flags_1"))?,
                u32::try_from(pg_head)
                    .ok()
                    .filter(|&b| b < 64)
                    .ok_or(BtfError::Malformed("PG_head out of range"))?,
            ))
        })();
        // When the thread last came on CPU: CONFIG_SCHED_INFO's arrival
        // stamp, on the same run-queue clock as the switch stamps.
        let last_arrival = self
            .member_offset("task_struct", "sched_info")
            .and_then(|o| Ok(o + self.member_offset("sched_info", "last_arrival")?));
        // Types that untyped addresses are cast to (see `cast_valid`, which
        // the loader sets once the kfunc calls are in place).
        let casts = (|| -> Result<(u32, u32, u32), BtfError> {
            Ok((
                self.struct_id("kiocb")?,
                self.member_offset("kiocb", "ki_filp")?,
                self.struct_id("io_kiocb")?,
            ))
        })()
        .unwrap_or((0, 0, 0));
        let task_id = self.struct_id("task_struct").unwrap_or(0);
        let regs = (|| -> Result<(u32, u32), BtfError> {
            Ok((
                self.struct_id("pt_regs")?,
                self.member_offset("task_struct", "stack")?,
            ))
        })()
        .unwrap_or((0, 0));
        let ti_status = self
            .member_offset("task_struct", "thread_info")
            .and_then(|o| Ok(o + self.member_offset("thread_info", "status")?));
        // io_uring may be compiled out; then completions are counted
        // without their opcode.
        let uring = self
            .member_offset("io_kiocb", "opcode")
            .and_then(|op| Ok((op, self.member_offset("io_kiocb", "ctx")?)));
        // A read's range, for the filemap_get_pages fexit.
        let read_range = self
            .member_offset("kiocb", "ki_pos")
            .and_then(|pos| Ok((pos, self.member_offset("iov_iter", "count")?)));
        // `state` until 5.14.
        let task_state = self
            .member_offset("task_struct", "__state")
            .or_else(|_| self.member_offset("task_struct", "state"));
        // The block family's request fields; `request_queue.disk` since 5.15.
        let block = (|| -> Result<[u32; 6], BtfError> {
            Ok([
                self.member_offset("request", "q")?,
                self.member_offset("request", "cmd_flags")?,
                self.member_offset("request", "__data_len")?,
                self.member_offset("request_queue", "disk")?,
                self.member_offset("gendisk", "major")?,
                self.member_offset("gendisk", "first_minor")?,
            ])
        })();
        let blk = |i: usize| block.as_ref().map_or(0, |b| b[i]);
        Ok(KernelOffsets {
            block_valid: u32::from(block.is_ok()),
            rq_q: blk(0),
            rq_cmd_flags: blk(1),
            rq_data_len: blk(2),
            queue_disk: blk(3),
            disk_major: blk(4),
            disk_first_minor: blk(5),
            cast_valid: 0,
            btf_kiocb: casts.0,
            kiocb_filp: casts.1,
            btf_io_kiocb: casts.2,
            btf_pt_regs: regs.0,
            task_stack: regs.1,
            btf_task: task_id,
            compat_valid: u32::from(ti_status.is_ok()),
            task_ti_status: ti_status.unwrap_or(0),
            task_sum_exec: se + self.member_offset("sched_entity", "sum_exec_runtime")?,
            task_prev_sum_exec: se + self.member_offset("sched_entity", "prev_sum_exec_runtime")?,
            sched_info_valid: u32::from(last_arrival.is_ok() && rq_clock.is_ok()),
            task_last_arrival: last_arrival.unwrap_or(0),
            folio_valid: u32::from(folio.is_ok()),
            folio_flags: folio.as_ref().map_or(0, |f| f.0),
            folio_order: folio.as_ref().map_or(0, |f| f.1),
            pg_head: folio.as_ref().map_or(0, |f| f.2),
            task_se_cfs_rq: rq_clock.as_ref().map_or(0, |r| r.0),
            cfs_rq_rq: rq_clock.as_ref().map_or(0, |r| r.1),
            rq_clock: rq_clock.as_ref().map_or(0, |r| r.2),
            valid: 1,
            task_files: self.member_offset("task_struct", "files")?,
            files_fdt: self.member_offset("files_struct", "fdt")?,
            files_fd_array: self.member_offset("files_struct", "fd_array")?,
            fdt_fd: self.member_offset("fdtable", "fd")?,
            file_inode: self.member_offset("file", "f_inode")?,
            inode_mode: self.member_offset("inode", "i_mode")?,
            task_group_leader: self.member_offset("task_struct", "group_leader")?,
            task_comm: self.member_offset("task_struct", "comm")?,
            task_pid: self.member_offset("task_struct", "pid")?,
            task_tgid: self.member_offset("task_struct", "tgid")?,
            task_nvcsw: self.member_offset("task_struct", "nvcsw")?,
            task_nivcsw: self.member_offset("task_struct", "nivcsw")?,
            task_flags: self.member_offset("task_struct", "flags")?,
            kiocb_opcode: uring.as_ref().map_or(0, |u| u.0),
            kiocb_ctx: uring.as_ref().map_or(0, |u| u.1),
            uring_valid: u32::from(uring.is_ok()),
            read_range_valid: u32::from(read_range.is_ok()),
            kiocb_pos: read_range.as_ref().map_or(0, |r| r.0),
            iter_count: read_range.as_ref().map_or(0, |r| r.1),
            task_state: task_state.unwrap_or(0),
            // Set by the loader: from tracefs formats and the tracepoint's
            // prototype, not struct layouts.
            fm_add_order: 0,
            uring_create_ctx: 0,
            switch_prev_state_arg: 0,
            file_f_mode: self.member_offset("file", "f_mode")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a tiny BTF blob: `struct outer { int a; union { int b; long c; }; }`.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0b\0c\0long\0".to_vec();
        let s = |name: &str| -> u32 {
            let needle = format!("\0{name}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .map(|p| p as u32 + 1)
                .unwrap_or(0)
        };
        let mut t = Vec::new();
        let mut push = |v: u32| t.extend_from_slice(&v.to_le_bytes());
        // 1: int
        push(s("int"));
        push(KIND_INT << 24);
        push(4);
        push(32);
        // 2: long
        push(s("long"));
        push(KIND_INT << 24);
        push(8);
        push(64);
        // 3: anonymous union { int b; long c; }
        push(0);
        push((KIND_UNION << 24) | 2);
        push(8);
        push(s("b"));
        push(1);
        push(0);
        push(s("c"));
        push(2);
        push(0);
        // 4: struct outer { int a; <anon union> at bit 64 }
        push(s("outer"));
        push((KIND_STRUCT << 24) | 2);
        push(16);
        push(s("a"));
        push(1);
        push(0);
        push(0);
        push(3);
        push(64);
        let mut blob = Vec::new();
        blob.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        blob.extend_from_slice(&[1, 0]);
        for v in [
            24u32,
            0,
            t.len() as u32,
            t.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend_from_slice(&v.to_le_bytes());
        }
        blob.extend_from_slice(&t);
        blob.extend_from_slice(&strings);
        blob
    }

    #[test]
    fn finds_direct_and_anonymous_members() {
        let btf = Btf::parse(&sample()).expect("parse");
        assert_eq!(btf.member_offset("outer", "a").expect("a"), 0);
        assert_eq!(btf.member_offset("outer", "b").expect("b"), 8);
        assert_eq!(btf.member_offset("outer", "c").expect("c"), 8);
        assert!(matches!(
            btf.member_offset("outer", "zz"),
            Err(BtfError::NoMember(..))
        ));
        assert!(matches!(
            btf.member_offset("nope", "a"),
            Err(BtfError::NoStruct(..))
        ));
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"not btf at all, not at all").is_err());
        assert!(Btf::parse(&[]).is_err());
    }

    /// Offsets of direct members as bpftool prints them: an independent
    /// reading of the same BTF.
    fn bpftool_offset(dump: &str, strukt: &str, member: &str) -> Option<u32> {
        let head = format!("STRUCT '{strukt}' size=");
        let mut lines = dump.lines().skip_while(|l| !l.contains(&head));
        lines.next()?;
        let prefix = format!("\t'{member}' type_id=");
        lines
            .take_while(|l| l.starts_with('\t'))
            .find(|l| l.starts_with(&prefix))
            .and_then(|l| l.split("bits_offset=").nth(1))
            .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok())
            .map(|bits| bits / 8)
    }

    /// The id bpftool prints for the type `name` of `kind` (`STRUCT`,
    /// `FUNC`): `[869] STRUCT 'kiocb' size=48 vlen=8`.
    fn bpftool_id(dump: &str, kind: &str, name: &str) -> Option<u32> {
        let needle = format!("] {kind} '{name}' ");
        dump.lines()
            .find(|l| l.contains(&needle))
            .and_then(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
    }

    #[test]
    fn running_kernel_offsets_match_bpftool() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        let in_ci = std::env::var_os("CI").is_some_and(|v| v == "true");
        let dump = std::process::Command::new("bpftool")
            .args(["btf", "dump", "file", "/sys/kernel/btf/vmlinux"])
            .output();
        let dump = match dump {
            Ok(o) if o.status.success() && path.exists() => {
                String::from_utf8_lossy(&o.stdout).into_owned()
            }
            other => {
                assert!(!in_ci, "CI needs bpftool and kernel BTF: {other:?}");
                eprintln!("skipped: bpftool or {} unavailable", path.display());
                return;
            }
        };
        let btf = Btf::from_file(path).expect("parse vmlinux BTF");
        for (strukt, member) in [
            ("task_struct", "files"),
            ("task_struct", "group_leader"),
            ("task_struct", "comm"),
            ("task_struct", "pid"),
            ("task_struct", "tgid"),
            ("io_kiocb", "opcode"),
            ("files_struct", "fdt"),
            ("fdtable", "fd"),
            ("file", "f_inode"),
            ("file", "f_mode"),
            ("inode", "i_mode"),
            ("task_struct", "nvcsw"),
            ("task_struct", "nivcsw"),
            ("task_struct", "flags"),
            ("io_kiocb", "ctx"),
            ("files_struct", "fd_array"),
            ("cfs_rq", "rq"),
            ("rq", "clock"),
            ("task_struct", "se"),
            ("sched_entity", "sum_exec_runtime"),
            ("sched_entity", "prev_sum_exec_runtime"),
            ("task_struct", "sched_info"),
            ("sched_info", "last_arrival"),
            ("kiocb", "ki_filp"),
            ("task_struct", "stack"),
            ("task_struct", "thread_info"),
            ("thread_info", "status"),
            ("request", "q"),
            ("request", "cmd_flags"),
            ("request", "__data_len"),
            ("request_queue", "disk"),
            ("gendisk", "major"),
            ("gendisk", "first_minor"),
        ] {
            let ours = btf.member_offset(strukt, member).expect("member");
            let theirs = bpftool_offset(&dump, strukt, member)
                .unwrap_or_else(|| panic!("bpftool shows no {strukt}.{member}"));
            assert_eq!(ours, theirs, "{strukt}.{member}");
        }
        // Enumerators as bpftool prints them: `'PG_head' val=6`.
        let theirs: i64 = dump
            .lines()
            .find_map(|l| l.trim().strip_prefix("'PG_head' val="))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("bpftool shows PG_head");
        assert_eq!(btf.enum_value("PG_head").expect("PG_head"), theirs);
        assert!(btf.enum_value("no_such_enumerator_here").is_err());
        // The ids the casts and the kfunc call use.
        for (kind, name, ours) in [
            ("STRUCT", "kiocb", btf.struct_id("kiocb").ok()),
            ("STRUCT", "io_kiocb", btf.struct_id("io_kiocb").ok()),
            ("STRUCT", "pt_regs", btf.struct_id("pt_regs").ok()),
            ("STRUCT", "task_struct", btf.struct_id("task_struct").ok()),
            ("FUNC", "bpf_rdonly_cast", btf.func_id("bpf_rdonly_cast")),
        ] {
            let theirs = bpftool_id(&dump, kind, name);
            assert!(theirs.is_some(), "bpftool shows no {kind} {name}");
            assert_eq!(ours, theirs, "{kind} {name}");
        }
        let o = btf.kernel_offsets().expect("all offsets resolve");
        // Debian's kernels (CI) have everything the typed programs use.
        assert_eq!(
            (
                o.folio_valid,
                o.sched_info_valid,
                o.uring_valid,
                o.compat_valid,
                o.block_valid
            ),
            (1, 1, 1, 1, 1)
        );
    }
}
