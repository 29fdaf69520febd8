//! Sequential detection and the prefetch range of one open handle: pure functions of its
//! state, so that the read path's policy is table-tested apart from its I/O.
//!
//! A read of blocks `b0..=b1` is sequential when it starts within the blocks the previous
//! read ended in, or at most the current window past them (the kernel's readahead may skip
//! ahead), or, for the first read, at block 0. A sequential read doubles the window (1 block
//! up to the maximum); any other read resets it to 1 and forgets how far prefetch had got.
//! After a sequential read, the blocks from the one after `b1` (or after what was already
//! prefetched) up to `b1 + window` are wanted — but only once that range is a whole run long
//! (or reaches the object's last block): topping the window up block by block would make
//! every GET one block long.

use std::ops::Range;

/// What a handle remembers for sequential detection and prefetch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// The last block of the previous read.
    pub last_block: Option<u64>,
    /// Blocks to keep fetched ahead of a sequential reader (0 before the first read).
    pub blocks: u64,
    /// Prefetch has been started for every block below this one.
    pub prefetched_to: u64,
}

/// What a read did to the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advanced {
    pub sequential: bool,
    /// A window larger than one block was reset (counted as `window_resets`).
    pub reset: bool,
}

impl Window {
    /// Records a read of blocks `b0..=b1`; the window grows up to `max_blocks`.
    pub fn advance(&mut self, b0: u64, b1: u64, max_blocks: u64) -> Advanced {
        let sequential = match self.last_block {
            None => b0 == 0,
            Some(last) => b0 >= last && b0 <= last + 1 + self.blocks,
        };
        let mut reset = false;
        if sequential {
            self.blocks = (self.blocks * 2).clamp(1, max_blocks.max(1));
        } else {
            reset = self.blocks > 1;
            self.blocks = 1;
            self.prefetched_to = 0;
        }
        self.last_block = Some(b1);
        Advanced { sequential, reset }
    }

    /// The blocks to prefetch after a read that ended at block `b1` of an object whose last
    /// block is `last`, in GETs of `run_blocks`: `None` while the new part of the window is
    /// shorter than a run (or half the window, when that is smaller) and does not reach the
    /// object's end.
    pub fn prefetch_range(&self, b1: u64, last: u64, run_blocks: u64) -> Option<(u64, u64)> {
        let from = (b1 + 1).max(self.prefetched_to);
        let to = (b1 + self.blocks).min(last);
        let whole_run = run_blocks.min(self.blocks / 2).max(1);
        if from > to || (to < last && to - from + 1 < whole_run) {
            return None;
        }
        Some((from, to))
    }
}

/// Splits ascending block numbers into runs of consecutive blocks at most `run_blocks`
/// long: index ranges into `blocks`, one GET each.
pub fn runs(blocks: &[u64], run_blocks: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < blocks.len() {
        let mut j = i + 1;
        while j < blocks.len() && blocks[j] == blocks[j - 1] + 1 && j - i < run_blocks.max(1) {
            j += 1;
        }
        out.push(i..j);
        i = j;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A named case: reads as (b0, b1), and (sequential, window after) per read.
    type Case<'a> = (&'a str, &'a [(u64, u64)], &'a [(bool, u64)]);
    /// (window, prefetched to, read's last block, object's last block, run) and the range.
    type RangeCase = ((u64, u64, u64, u64, u64), Option<(u64, u64)>);

    #[test]
    fn sequential_reads_double_the_window_and_others_reset_it() {
        let table: &[Case] = &[
            (
                "from the start, block after block",
                &[(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)],
                &[(true, 1), (true, 2), (true, 4), (true, 8), (true, 16)],
            ),
            (
                "a first read past block 0 is not sequential",
                &[(5, 5), (6, 6)],
                &[(false, 1), (true, 2)],
            ),
            (
                "re-reading the last block continues",
                &[(0, 1), (1, 1), (1, 2)],
                &[(true, 1), (true, 2), (true, 4)],
            ),
            (
                "a skip within the window continues (kernel readahead)",
                &[(0, 0), (1, 1), (4, 4)],
                &[(true, 1), (true, 2), (true, 4)],
            ),
            (
                "a jump past the window resets",
                &[(0, 0), (1, 1), (9, 9)],
                &[(true, 1), (true, 2), (false, 1)],
            ),
            (
                "a jump back resets",
                &[(0, 3), (4, 7), (2, 2)],
                &[(true, 1), (true, 2), (false, 1)],
            ),
        ];
        for (name, reads, want) in table {
            let mut w = Window::default();
            for (i, (&(b0, b1), &(seq, blocks))) in reads.iter().zip(want.iter()).enumerate() {
                let a = w.advance(b0, b1, 16);
                assert_eq!((a.sequential, w.blocks), (seq, blocks), "{name}: read {i}");
            }
        }
    }

    #[test]
    fn a_reset_forgets_the_prefetch_position_and_is_reported_once_grown() {
        let mut w = Window::default();
        w.advance(0, 0, 16);
        w.advance(1, 1, 16);
        w.prefetched_to = 10;
        let a = w.advance(40, 40, 16);
        assert_eq!(
            a,
            Advanced {
                sequential: false,
                reset: true
            }
        );
        assert_eq!(w.prefetched_to, 0);
        let a = w.advance(80, 80, 16);
        assert!(!a.reset, "a window of one block has nothing to reset");
    }

    #[test]
    fn prefetch_waits_for_a_whole_run_unless_the_end_is_near() {
        let w = |blocks, prefetched_to| Window {
            last_block: Some(0),
            blocks,
            prefetched_to,
        };
        // (window, prefetched_to, b1, last, run) → range
        let table: &[RangeCase] = &[
            // A fresh 8-block window, runs of 4: blocks 1..=8.
            ((8, 0, 0, 100, 4), Some((1, 8))),
            // Prefetched to 9 already, read at 2: only 9..=10 new, less than a run: wait.
            ((8, 9, 2, 100, 4), None),
            // At 5: 9..=13 is a whole run.
            ((8, 9, 5, 100, 4), Some((9, 13))),
            // Near the end the remainder goes, however short.
            ((8, 9, 5, 10, 4), Some((9, 10))),
            // Everything up to the end already prefetched.
            ((8, 11, 5, 10, 4), None),
            // A 2-block window wants its one next block (half the window is a run).
            ((2, 0, 3, 100, 16), Some((4, 5))),
        ];
        for &((blocks, pt, b1, last, run), want) in table {
            assert_eq!(
                w(blocks, pt).prefetch_range(b1, last, run),
                want,
                "window {blocks}, prefetched to {pt}, read at {b1}, last {last}, run {run}"
            );
        }
    }

    #[test]
    fn runs_split_at_gaps_and_at_the_run_length() {
        assert_eq!(runs(&[], 4), Vec::<Range<usize>>::new());
        assert_eq!(runs(&[3], 4), vec![0..1]);
        assert_eq!(runs(&[1, 2, 3, 7, 8], 4), vec![0..3, 3..5]);
        assert_eq!(runs(&[1, 2, 3, 4, 5, 6], 4), vec![0..4, 4..6]);
        assert_eq!(
            runs(&[1, 2], 0),
            vec![0..1, 1..2],
            "a run is at least one block"
        );
    }
}
