//! Figures over rounds: each figure's median and range, and the order the targets take in
//! each round.

/// One figure over the rounds: its median (what the tables report) and its range (the
/// noise a reader should see next to it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    /// The median over the rounds.
    pub median: f64,
    /// The smallest value of a round.
    pub min: f64,
    /// The largest value of a round.
    pub max: f64,
}

impl Spread {
    /// The spread of the known, finite values (a round that could not measure the figure is
    /// left out); `None` when no round knows it.
    pub fn of(values: impl IntoIterator<Item = Option<f64>>) -> Option<Spread> {
        let mut known: Vec<f64> = values
            .into_iter()
            .flatten()
            .filter(|v| v.is_finite())
            .collect();
        known.sort_by(f64::total_cmp);
        Some(Spread {
            median: median(&known)?,
            min: *known.first()?,
            max: *known.last()?,
        })
    }

    /// The range as `min-max`, each with `decimals` decimals.
    pub fn range(&self, decimals: usize) -> String {
        format!("{:.decimals$}-{:.decimals$}", self.min, self.max)
    }
}

/// The median of values sorted in ascending order: the middle one, or the mean of the two
/// middle ones for an even count; `None` for no values.
pub fn median(sorted: &[f64]) -> Option<f64> {
    let upper = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted.get(upper).copied()
    } else {
        Some((sorted.get(upper.checked_sub(1)?)? + sorted.get(upper)?) / 2.0)
    }
}

/// The order of `n` targets in round `round` (counted from 0): every index once, starting at
/// `round mod n` and wrapping around, so that each target goes first in one round of `n`
/// and takes every place once over `n` rounds.
pub fn rotation(n: usize, round: usize) -> Vec<usize> {
    (0..n).map(|i| (round + i) % n).collect()
}

#[cfg(test)]
mod tests {
    use super::{median, rotation, Spread};

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[4.0]), Some(4.0));
        assert_eq!(median(&[1.0, 3.0]), Some(2.0));
        assert_eq!(median(&[1.0, 2.0, 10.0]), Some(2.0));
        assert_eq!(median(&[1.0, 2.0, 4.0, 10.0]), Some(3.0));
    }

    #[test]
    fn spread_over_rounds() {
        // The three runs of bare-async at 100 connections that prompted the rounds.
        let rates = Spread::of([Some(98e3), Some(70e3), Some(105e3)]);
        assert_eq!(
            rates,
            Some(Spread {
                median: 98e3,
                min: 70e3,
                max: 105e3
            })
        );
        assert_eq!(rates.map(|s| s.range(0)).as_deref(), Some("70000-105000"));
        // Unknown and non-finite values are left out, not counted as zero.
        let cpu = Spread::of([Some(9.5), None, Some(f64::NAN), Some(8.5)]);
        assert_eq!(
            cpu,
            Some(Spread {
                median: 9.0,
                min: 8.5,
                max: 9.5
            })
        );
        assert_eq!(Spread::of([None, Some(f64::INFINITY)]), None);
        assert_eq!(Spread::of(std::iter::empty()), None);
    }

    #[test]
    fn rotations() {
        assert_eq!(rotation(3, 0), vec![0, 1, 2]);
        assert_eq!(rotation(3, 1), vec![1, 2, 0]);
        assert_eq!(rotation(3, 2), vec![2, 0, 1]);
        assert_eq!(rotation(3, 3), vec![0, 1, 2]);
        assert_eq!(rotation(1, 5), vec![0]);
        assert!(rotation(0, 2).is_empty());
        // Over n rounds every target goes first once and takes every place once.
        let n = 5;
        for place in 0..n {
            let mut at_place: Vec<usize> = (0..n)
                .filter_map(|r| rotation(n, r).get(place).copied())
                .collect();
            at_place.sort_unstable();
            assert_eq!(at_place, (0..n).collect::<Vec<_>>());
        }
    }
}
