//! What the verifier will think of each program: its stack, read from the
//! object itself.
//!
//! Kernels without private BPF stacks (Debian 12's 6.1, 6.12) refuse a
//! program whose deepest call chain needs more than 512 bytes of stack,
//! each frame counted as the verifier does (`round_up(max(depth, 1), 32)`,
//! kernel/bpf/verifier.c `check_max_stack_depth`). A successful load
//! returns no verifier log (aya asks for one only after a failure), so the
//! depth is computed here from the instructions: the deepest `r10`-relative
//! access or `r10`-derived pointer of each function, and the calls between
//! functions, resolved through the object's relocations. The kernel's own
//! count of processed instructions comes from the loaded program's info
//! (`verified_insns`, Linux 5.16).

use std::collections::BTreeMap;

use object::{Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget, SymbolKind};

/// The verifier's limit on a program's combined stack without private
/// stacks (`MAX_BPF_STACK`).
pub const MAX_COMBINED_STACK: u32 = 512;
/// The verifier's limit on processed instructions per program
/// (`BPF_COMPLEXITY_LIMIT_INSNS`).
pub const MAX_PROCESSED_INSNS: u32 = 1_000_000;

/// The stack a program needs, as the verifier will count it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackFigures {
    /// The program's own frame, in bytes.
    pub own: u32,
    /// The deepest call chain from the program, each frame rounded to 32
    /// bytes (the figure the 512-byte limit applies to).
    pub combined: u32,
    /// The functions on that chain, outermost first.
    pub chain: Vec<String>,
}

/// One function of the object: where its code is and what it calls.
#[derive(Debug)]
struct Function {
    name: String,
    depth: u32,
    /// Names of the functions it calls.
    calls: Vec<String>,
}

const BPF_CALL: u8 = 0x85;
const BPF_PSEUDO_CALL: u8 = 1;
const BPF_REG_FP: u8 = 10;
/// `rX = rY` (ALU64 MOV X) and `rX += imm` (ALU64 ADD K).
const BPF_MOV64_X: u8 = 0xbf;
const BPF_ADD64_K: u8 = 0x07;
/// Load/store classes: LDX, ST, STX (low three bits of the opcode).
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;

/// Stack figures of every function symbol in the object that is a
/// program (the entry of a program section), by function name.
pub fn stack_figures(obj: &[u8]) -> Result<BTreeMap<String, StackFigures>, String> {
    let file = object::File::parse(obj).map_err(|e| format!("parsing the eBPF object: {e}"))?;
    let mut functions: BTreeMap<String, Function> = BTreeMap::new();
    // (section index, start address) -> function name, to resolve
    // pc-relative calls inside one section.
    let mut by_address: BTreeMap<(usize, u64), String> = BTreeMap::new();
    let mut programs = Vec::new();
    for sym in file.symbols() {
        if sym.kind() != SymbolKind::Text || sym.size() == 0 {
            continue;
        }
        let (Ok(name), Some(section)) = (sym.name(), sym.section_index()) else {
            continue;
        };
        by_address.insert((section.0, sym.address()), name.to_owned());
        if file
            .section_by_index(section)
            .ok()
            .and_then(|s| s.name().ok().map(|n| n != ".text"))
            .unwrap_or(false)
        {
            programs.push(name.to_owned());
        }
    }
    for sym in file.symbols() {
        if sym.kind() != SymbolKind::Text || sym.size() == 0 {
            continue;
        }
        let (Ok(name), Some(index)) = (sym.name(), sym.section_index()) else {
            continue;
        };
        let section = file
            .section_by_index(index)
            .map_err(|e| format!("symbol {name}: {e}"))?;
        let data = section
            .data()
            .map_err(|e| format!("section of {name}: {e}"))?;
        let relocs: BTreeMap<u64, RelocationTarget> = section
            .relocations()
            .map(|(off, r)| (off, r.target()))
            .collect();
        let (start, end) = (sym.address(), sym.address() + sym.size());
        let code = usize::try_from(start)
            .ok()
            .zip(usize::try_from(end).ok())
            .and_then(|(s, e)| data.get(s..e))
            .ok_or_else(|| format!("function {name} lies outside its section"))?;
        let mut depth = 0u32;
        let mut calls = Vec::new();
        // Registers that hold r10 plus a known offset.
        let mut fp_derived = [None::<i64>; 11];
        for (i, insn) in code.chunks_exact(8).enumerate() {
            let (op, dst, src) = (insn[0], insn[1] & 0x0f, insn[1] >> 4);
            let off = i64::from(i16::from_le_bytes([insn[2], insn[3]]));
            let imm = i64::from(i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]));
            let mut deepest = |at: i64| {
                if at < 0 {
                    depth = depth.max(u32::try_from(-at).unwrap_or(u32::MAX));
                }
            };
            match op & 0x07 {
                CLASS_LDX if src == BPF_REG_FP => deepest(off),
                CLASS_ST | CLASS_STX if dst == BPF_REG_FP => deepest(off),
                _ => {}
            }
            let dst_slot = usize::from(dst).min(10);
            match op {
                BPF_MOV64_X => {
                    fp_derived[dst_slot] = if src == BPF_REG_FP {
                        Some(0)
                    } else {
                        fp_derived[usize::from(src).min(10)]
                    }
                }
                BPF_ADD64_K => {
                    if let Some(base) = fp_derived[dst_slot] {
                        fp_derived[dst_slot] = Some(base + imm);
                        deepest(base + imm);
                    }
                }
                BPF_CALL if src == BPF_PSEUDO_CALL => {
                    let at = start + 8 * i as u64;
                    let callee = match relocs.get(&at) {
                        Some(RelocationTarget::Symbol(s)) => {
                            file.symbol_by_index(*s).ok().and_then(|t| {
                                // A call to a section symbol names its
                                // target by the immediate's offset in it.
                                if t.kind() == SymbolKind::Section {
                                    let target = t.address() as i64 + (imm + 1) * 8;
                                    t.section_index().and_then(|s| {
                                        by_address.get(&(s.0, target as u64)).cloned()
                                    })
                                } else {
                                    t.name().ok().map(str::to_owned)
                                }
                            })
                        }
                        _ => {
                            let target = at as i64 + (imm + 1) * 8;
                            by_address.get(&(index.0, target as u64)).cloned()
                        }
                    };
                    calls.push(callee.ok_or_else(|| {
                        format!("{name}: a call at instruction {i} to an unknown function")
                    })?);
                    // A call clobbers r1-r5.
                    for r in &mut fp_derived[1..=5] {
                        *r = None;
                    }
                }
                _ => {
                    // Any other write to a register ends what it held.
                    if op & 0x07 == 0x07 || op & 0x07 == 0x04 || op & 0x07 == CLASS_LDX {
                        fp_derived[dst_slot] = None;
                    }
                }
            }
        }
        functions.insert(
            name.to_owned(),
            Function {
                name: short_name(name),
                depth,
                calls,
            },
        );
    }
    let mut out = BTreeMap::new();
    for program in programs {
        let mut memo = BTreeMap::new();
        let (combined, chain) = deepest_chain(&functions, &program, &mut memo, 0)?;
        let own = functions.get(&program).map_or(0, |f| f.depth);
        out.insert(
            program,
            StackFigures {
                own,
                combined,
                chain,
            },
        );
    }
    Ok(out)
}

/// A function's name as its source calls it: Rust's mangled names
/// (`_RNvNtCs…_6iolens4slot5flush`) shortened to their path in the crate
/// (`slot::flush`).
fn short_name(name: &str) -> String {
    let full = format!("{:#}", rustc_demangle::demangle(name));
    match full.split_once("::") {
        Some((_crate, path)) if name.starts_with("_R") => path.to_owned(),
        _ => full,
    }
}

/// A frame as the verifier counts it.
fn frame(depth: u32) -> u32 {
    depth.max(1).div_ceil(32) * 32
}

type Chain = (u32, Vec<String>);

fn deepest_chain(
    functions: &BTreeMap<String, Function>,
    name: &str,
    memo: &mut BTreeMap<String, Chain>,
    level: u32,
) -> Result<Chain, String> {
    if let Some(c) = memo.get(name) {
        return Ok(c.clone());
    }
    // The verifier allows at most 8 frames; a deeper chain here is a
    // recursion the verifier would refuse anyway.
    if level > 8 {
        return Err(format!("call chain through {name} is deeper than 8 frames"));
    }
    let f = functions
        .get(name)
        .ok_or_else(|| format!("no function {name} in the object"))?;
    let mut best: Chain = (0, Vec::new());
    for callee in &f.calls {
        let c = deepest_chain(functions, callee, memo, level + 1)?;
        if c.0 > best.0 {
            best = c;
        }
    }
    let mut chain = vec![f.name.clone()];
    chain.extend(best.1);
    let result = (frame(f.depth) + best.0, chain);
    memo.insert(name.to_owned(), result.clone());
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_up_as_the_verifier_does() {
        assert_eq!(frame(0), 32);
        assert_eq!(frame(1), 32);
        assert_eq!(frame(32), 32);
        assert_eq!(frame(33), 64);
        assert_eq!(frame(336), 352);
    }

    #[test]
    fn mangled_names_are_shortened_to_their_path() {
        assert_eq!(
            short_name("_RNvNtCs1hKBFltczkz_6iolens4slot5flush"),
            "slot::flush"
        );
        assert_eq!(short_name("iolens_sys_exit"), "iolens_sys_exit");
    }
}
