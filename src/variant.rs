//! The Bone / MiSS variants found in the wild, each a first-class value.

use std::fmt;

/// Which block-affine adapter a layer carries. See `README.md` for the table of
/// who uses which, and the shape of the trainable tensor `B` for each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// One r x r block per output block row: `B: [N/r, r, r]`,
    /// `W'_{o,i} = W_{o,i} (I + B_o) + B_o`. PEFT `init_weights="bat"`, the paper's Bone.
    BatCol,
    /// One r x r block per input block column: `B: [K/r, r, r]`,
    /// `W'_{o,i} = W_{o,i} (I + B_i) + B_i`. The paper's Bone-row, RWKV-PEFT `BatLinear`.
    BatRow,
    /// The shared block (PEFT's default for Bone and MiSS): `B: [r, N]`,
    /// `dW[n, k] = B[k mod r, n]`; any K (the last chunk of X is zero-padded).
    Shared,
    /// MiSS `init_weights="mini"`: `B: [r, mini_r]` repeated along N,
    /// `dW[n, k] = B[k mod r, n mod mini_r]`.
    Mini {
        /// Width of the trained block; N must be a multiple of it.
        mini_r: usize,
    },
}

impl Variant {
    /// The name used in error messages and printed tables.
    pub fn name(&self) -> &'static str {
        match self {
            Variant::BatCol => "BatCol",
            Variant::BatRow => "BatRow",
            Variant::Shared => "Shared",
            Variant::Mini { .. } => "Mini",
        }
    }

    /// True for the two Bat groupings, whose update is `W (I + B) + B` per block.
    pub fn is_bat(&self) -> bool {
        matches!(self, Variant::BatCol | Variant::BatRow)
    }

    /// B's layout, PEFT's, in symbols: `"[N/r, r, r]"`, `"[K/r, r, r]"`, `"[r, N]"`, `"[r, mini_r]"`.
    pub fn adapter_layout(&self) -> &'static str {
        match self {
            Variant::BatCol => "[N/r, r, r]",
            Variant::BatRow => "[K/r, r, r]",
            Variant::Shared => "[r, N]",
            Variant::Mini { .. } => "[r, mini_r]",
        }
    }

    /// Whether a B of shape `dims` is one this variant stores with block size `r` (for
    /// some layer: N and K are not in it).
    pub fn holds_blocks(&self, r: usize, dims: &[usize]) -> bool {
        r > 0
            && match (self, dims) {
                (Variant::BatCol | Variant::BatRow, &[blocks, rows, cols]) => blocks > 0 && rows == r && cols == r,
                (Variant::Shared, &[rows, n]) => rows == r && n > 0,
                (Variant::Mini { mini_r }, &[rows, cols]) => rows == r && cols == *mini_r && cols > 0,
                _ => false,
            }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Variant::Mini { mini_r } => write!(f, "Mini(mini_r={mini_r})"),
            other => f.write_str(other.name()),
        }
    }
}
