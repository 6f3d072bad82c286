//! Duplicate (user, movie) ratings anywhere in a ratings file, the first in file order winning,
//! with memory that does not grow with the file when it is sorted by user (every real copy is).
//!
//! A file is a sequence of *blocks*: runs of rows of one user. Within a block the movies seen
//! are kept (a plain `Vec` while they ascend, the usual case, a hash set for the rest), and are
//! dropped when the block ends. The users whose block has started are kept too (ascending in a
//! `Vec`, 8 bytes a user, or in a set when they come out of order). A block of a user seen
//! before (a *revisit*: the file is not grouped by user) cannot be checked against that user's
//! earlier rows, which are gone: its rows, and every later row of that user, are *deferred*
//! (spilled to a file by the caller) and decided at the end of the file, against the pairs
//! written for that user before its first deferred row (read again from the entry, only for
//! the revisited users) and the deferred rows before them; when those would be too many to
//! hold, in hash partitions of the revisited users, one read each. A file grouped by user
//! never defers anything and is read once.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::io::{self, BufRead, Read, Write};

use crate::clean::{IdHasher, IdSet};

/// (user, movie) pairs.
pub(crate) type PairSet = HashSet<(i64, i64), BuildHasherDefault<IdHasher>>;

/// What to do with a (user, movie) pair of the file's first pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// First time seen: write it.
    New,
    /// Seen earlier in this user's block: reject it.
    Duplicate,
    /// A revisited user: decide at the end of the file ([`RatingKeys::revisited`]).
    Defer,
}

/// The first pass's state; see the module documentation.
#[derive(Default)]
pub(crate) struct RatingKeys {
    /// The current block's user, and whether its rows are deferred.
    user: i64,
    deferring: bool,
    /// Largest movie of the current block so far; `ascending` holds the movies that arrived in
    /// increasing order (no hashing), `others` the rest.
    last: i64,
    ascending: Vec<i64>,
    others: IdSet,
    /// Users whose block has started: those that came in increasing order, and the others.
    users: Vec<i64>,
    users_other: IdSet,
    /// Revisited users, each with the index (among the pairs given to [`RatingKeys::insert`])
    /// of its first deferred row.
    revisited: HashMap<i64, u64, BuildHasherDefault<IdHasher>>,
    /// Pairs given to [`RatingKeys::insert`] so far.
    index: u64,
}

impl RatingKeys {
    /// Records the next (user, movie) pair of the file.
    #[inline]
    pub(crate) fn insert(&mut self, user: i64, movie: i64) -> Seen {
        let i = self.index;
        self.index += 1;
        if user != self.user || i == 0 {
            self.start_block(user, i);
        }
        if self.deferring {
            return Seen::Defer;
        }
        if movie > self.last {
            // Larger than anything seen in this block: new.
            self.last = movie;
            self.ascending.push(movie);
            return Seen::New;
        }
        if self.ascending.binary_search(&movie).is_err() && self.others.insert(movie) {
            Seen::New
        } else {
            Seen::Duplicate
        }
    }

    #[cold]
    fn start_block(&mut self, user: i64, i: u64) {
        self.user = user;
        self.last = i64::MIN;
        self.ascending.clear();
        self.others.clear();
        let in_order = self.users.last().is_none_or(|&l| user > l);
        let seen = !in_order && (self.users.binary_search(&user).is_ok() || self.users_other.contains(&user));
        self.deferring = seen;
        if seen {
            self.revisited.entry(user).or_insert(i);
        } else if in_order {
            self.users.push(user);
        } else {
            self.users_other.insert(user);
        }
    }

    /// The revisited users and the index of each one's first deferred row: the pairs of such
    /// a user at a smaller index are the ones the first pass decided itself.
    pub(crate) fn revisited(&self) -> &HashMap<i64, u64, BuildHasherDefault<IdHasher>> {
        &self.revisited
    }

    /// Pairs given to [`RatingKeys::insert`] so far.
    pub(crate) fn pairs(&self) -> u64 {
        self.index
    }

    /// Whether any row was deferred.
    pub(crate) fn deferred_any(&self) -> bool {
        !self.revisited.is_empty()
    }
}

/// One deferred row as the spill file holds it.
pub(crate) struct Deferred {
    pub(crate) user: i64,
    pub(crate) movie: i64,
    pub(crate) line: u64,
    pub(crate) rating: Vec<u8>,
    pub(crate) time: Vec<u8>,
    pub(crate) raw: Vec<u8>,
}

/// Appends a deferred row to a spill file.
pub(crate) fn write_deferred(
    w: &mut impl Write,
    user: i64,
    movie: i64,
    line: u64,
    rating: &[u8],
    time: &[u8],
    raw: &[u8],
) -> io::Result<()> {
    w.write_all(&user.to_le_bytes())?;
    w.write_all(&movie.to_le_bytes())?;
    w.write_all(&line.to_le_bytes())?;
    for b in [rating, time, raw] {
        w.write_all(&(b.len() as u64).to_le_bytes())?;
        w.write_all(b)?;
    }
    Ok(())
}

/// Reads the next deferred row into `d`; false at the end of the spill file.
pub(crate) fn read_deferred(r: &mut impl BufRead, d: &mut Deferred) -> io::Result<bool> {
    if r.fill_buf()?.is_empty() {
        return Ok(false);
    }
    let mut word = [0u8; 8];
    let mut next = |r: &mut dyn Read| -> io::Result<u64> {
        r.read_exact(&mut word)?;
        Ok(u64::from_le_bytes(word))
    };
    d.user = next(r)? as i64;
    d.movie = next(r)? as i64;
    d.line = next(r)?;
    for b in [&mut d.rating, &mut d.time, &mut d.raw] {
        let n = next(r)? as usize;
        b.resize(n, 0);
        r.read_exact(b)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pairs: &[(i64, i64)]) -> (Vec<Seen>, RatingKeys) {
        let mut k = RatingKeys::default();
        let seen = pairs.iter().map(|&(u, m)| k.insert(u, m)).collect();
        (seen, k)
    }

    #[test]
    fn a_file_grouped_by_user_defers_nothing() {
        use Seen::*;
        let (seen, k) = run(&[(1, 5), (1, 9), (1, 5), (1, 2), (1, 2), (2, 5), (2, 5), (7, 1), (3, 1)]);
        assert_eq!(seen, [New, New, Duplicate, New, Duplicate, New, Duplicate, New, New]);
        assert!(!k.deferred_any());
    }

    #[test]
    fn a_revisited_user_is_deferred_from_its_first_revisit_on() {
        use Seen::*;
        let (seen, k) = run(&[(1, 5), (2, 5), (1, 5), (1, 6), (3, 1), (2, 9), (1, 7), (5, 1), (4, 1)]);
        assert_eq!(seen, [New, New, Defer, Defer, New, Defer, Defer, New, New]);
        let mut r: Vec<(i64, u64)> = k.revisited().iter().map(|(&u, &i)| (u, i)).collect();
        r.sort_unstable();
        assert_eq!(r, [(1, 2), (2, 5)]);
    }

    #[test]
    fn spill_round_trip() {
        let mut buf = Vec::new();
        write_deferred(&mut buf, 3, 4, 10, b"4.0", b"", b"3,4,4.0,").unwrap();
        write_deferred(&mut buf, i64::MAX, 1, 11, b"", b"99", b"x").unwrap();
        let mut r = io::BufReader::new(&buf[..]);
        let mut d = Deferred {
            user: 0,
            movie: 0,
            line: 0,
            rating: Vec::new(),
            time: Vec::new(),
            raw: Vec::new(),
        };
        assert!(read_deferred(&mut r, &mut d).unwrap());
        assert_eq!((d.user, d.movie, d.line), (3, 4, 10));
        assert_eq!(
            (&d.rating[..], &d.time[..], &d.raw[..]),
            (&b"4.0"[..], &b""[..], &b"3,4,4.0,"[..])
        );
        assert!(read_deferred(&mut r, &mut d).unwrap());
        assert_eq!((d.user, d.movie, d.line, &d.time[..]), (i64::MAX, 1, 11, &b"99"[..]));
        assert!(!read_deferred(&mut r, &mut d).unwrap());
    }
}
