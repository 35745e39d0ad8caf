//! Token sequences of different lengths padded to one width: the input of a batched forward
//! pass.
//!
//! Generation pads on the left, so every row's next token lands in the same (last) column;
//! capture pads on the right, so row `b`'s token `i` sits in column `i` and a causal model's
//! activations at real tokens do not depend on the padding. Either way padding is masked
//! (`real` is false there) and no real token attends to it.
//!
//! ```
//! use lantern_lm::{Padding, TokenBatch};
//! let b = TokenBatch::new(&[vec![5, 6, 7], vec![8]], 0, Padding::Left).unwrap();
//! assert_eq!(b.ids, [5, 6, 7, 0, 0, 8]);
//! assert_eq!(b.span(1), 2..3); // row 1's only token is in the last column
//! ```

use std::ops::Range;

use crate::{LmError, Result};

/// Which side of a row the padding goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// Padding first (generation).
    Left,
    /// Padding last (capture).
    Right,
}

/// Rows of token ids padded to one width, with the mask of real tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBatch {
    /// `[rows · width]`, row-major.
    pub ids: Vec<u32>,
    /// `[rows][width]`: whether each column holds a real token.
    pub real: Vec<Vec<bool>>,
    pub width: usize,
    pub padding: Padding,
    lens: Vec<usize>,
}

impl TokenBatch {
    /// Pads `seqs` with `pad_id` to the longest one. Every sequence needs a token.
    pub fn new<S: AsRef<[u32]>>(seqs: &[S], pad_id: u32, padding: Padding) -> Result<Self> {
        if seqs.is_empty() || seqs.iter().any(|s| s.as_ref().is_empty()) {
            return Err(LmError::Config(
                "a batch needs at least one sequence, and every sequence a token".into(),
            ));
        }
        let lens: Vec<usize> = seqs.iter().map(|s| s.as_ref().len()).collect();
        let width = lens.iter().copied().max().unwrap_or(0);
        let mut ids = Vec::with_capacity(seqs.len() * width);
        let mut real = Vec::with_capacity(seqs.len());
        for s in seqs {
            let s = s.as_ref();
            let pad = width - s.len();
            match padding {
                Padding::Left => {
                    ids.extend(std::iter::repeat_n(pad_id, pad));
                    ids.extend(s);
                }
                Padding::Right => {
                    ids.extend(s);
                    ids.extend(std::iter::repeat_n(pad_id, pad));
                }
            }
            real.push(
                (0..width)
                    .map(|c| match padding {
                        Padding::Left => c >= pad,
                        Padding::Right => c < s.len(),
                    })
                    .collect(),
            );
        }
        Ok(Self {
            ids,
            real,
            width,
            padding,
            lens,
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.lens.len()
    }

    /// Number of real tokens of `row`.
    pub fn len(&self, row: usize) -> usize {
        self.lens[row]
    }

    /// Whether the batch has no rows (never true for a batch built by [`TokenBatch::new`]).
    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// The columns of `row`'s real tokens.
    pub fn span(&self, row: usize) -> Range<usize> {
        self.columns(row, 0..self.lens[row])
    }

    /// The columns of tokens `tokens` (indices within the row's sequence) of `row`: the
    /// per-row positions of an intervention on, e.g., each row's answer tokens.
    pub fn columns(&self, row: usize, tokens: Range<usize>) -> Range<usize> {
        let shift = match self.padding {
            Padding::Left => self.width - self.lens[row],
            Padding::Right => 0,
        };
        tokens.start + shift..tokens.end + shift
    }

    /// The `[len · d]` slice of row `row`'s real tokens in a host copy `acts` of a
    /// `[rows, width, d]` activation.
    pub fn row_slice<'a>(&self, acts: &'a [f32], row: usize, d: usize) -> &'a [f32] {
        let cols = self.span(row);
        let base = row * self.width;
        &acts[(base + cols.start) * d..(base + cols.end) * d]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn right_padding_keeps_tokens_in_their_own_columns() {
        let b = TokenBatch::new(&[vec![1, 2], vec![3, 4, 5]], 9, Padding::Right).unwrap();
        assert_eq!(b.ids, [1, 2, 9, 3, 4, 5]);
        assert_eq!(b.real, [vec![true, true, false], vec![true, true, true]]);
        assert_eq!((b.span(0), b.span(1)), (0..2, 0..3));
        let acts: Vec<f32> = (0..6 * 2).map(|i| i as f32).collect();
        assert_eq!(b.row_slice(&acts, 0, 2), [0.0, 1.0, 2.0, 3.0]);
        assert_eq!(b.row_slice(&acts, 1, 2), [6.0, 7.0, 8.0, 9.0, 10.0, 11.0]);
    }

    #[test]
    fn left_padding_aligns_the_last_tokens() {
        let b = TokenBatch::new(&[vec![1, 2], vec![3, 4, 5]], 9, Padding::Left).unwrap();
        assert_eq!(b.ids, [9, 1, 2, 3, 4, 5]);
        assert_eq!(b.real[0], [false, true, true]);
        assert_eq!(b.columns(0, 1..2), 2..3);
        assert_eq!(b.columns(1, 1..2), 1..2);
        assert!(TokenBatch::new(&[vec![1], vec![]], 0, Padding::Left).is_err());
    }
}
