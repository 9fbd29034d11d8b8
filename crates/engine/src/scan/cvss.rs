//! CVSS v3 vectors: the base metrics rules test, and the summary slot of each metric value.

/// The CVSS v3 base metrics a rule can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CvssMetric {
    /// AV: network / adjacent / local / physical.
    AttackVector,
    /// AC: low / high.
    AttackComplexity,
    /// A: the availability impact, none / low / high.
    Availability,
}

/// CVSS v3 attack vector (AV).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttackVector {
    /// `AV:N`, `network`.
    Network,
    /// `AV:A`, `adjacent`.
    Adjacent,
    /// `AV:L`, `local`.
    Local,
    /// `AV:P`, `physical`.
    Physical,
}

/// CVSS v3 attack complexity (AC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttackComplexity {
    /// `AC:L`, `low`.
    Low,
    /// `AC:H`, `high`.
    High,
}

/// CVSS v3 impact level, as used by the availability impact (A).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Impact {
    /// `N`, `none`.
    None,
    /// `L`, `low`.
    Low,
    /// `H`, `high`.
    High,
}

/// The parts of a CVSS v3 vector that rules test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CvssV3 {
    /// AV.
    pub attack_vector: AttackVector,
    /// AC.
    pub attack_complexity: AttackComplexity,
    /// A.
    pub availability: Impact,
}

/// CVSS v3.x metrics and their allowed values (base first, then temporal and environmental).
const CVSS_METRICS: [(&str, &[&str]); 22] = [
    ("AV", &["N", "A", "L", "P"]),
    ("AC", &["L", "H"]),
    ("PR", &["N", "L", "H"]),
    ("UI", &["N", "R"]),
    ("S", &["U", "C"]),
    ("C", &["N", "L", "H"]),
    ("I", &["N", "L", "H"]),
    ("A", &["N", "L", "H"]),
    ("E", &["X", "U", "P", "F", "H"]),
    ("RL", &["X", "O", "T", "W", "U"]),
    ("RC", &["X", "U", "R", "C"]),
    ("CR", &["X", "L", "M", "H"]),
    ("IR", &["X", "L", "M", "H"]),
    ("AR", &["X", "L", "M", "H"]),
    ("MAV", &["X", "N", "A", "L", "P"]),
    ("MAC", &["X", "L", "H"]),
    ("MPR", &["X", "N", "L", "H"]),
    ("MUI", &["X", "N", "R"]),
    ("MS", &["X", "U", "C"]),
    ("MC", &["X", "N", "L", "H"]),
    ("MI", &["X", "N", "L", "H"]),
    ("MA", &["X", "N", "L", "H"]),
];
/// Bits of the eight base metrics, which a vector must all carry.
const CVSS_BASE_MASK: u32 = 0xff;

impl CvssV3 {
    /// Parses a CVSS v3.0 or v3.1 vector (`CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H`,
    /// metrics in any order, optional temporal and environmental metrics). `None` when it is
    /// malformed: wrong prefix, unknown or repeated metric, bad value, missing base metric.
    pub fn parse(vector: &str) -> Option<CvssV3> {
        let rest = vector
            .strip_prefix("CVSS:3.1/")
            .or_else(|| vector.strip_prefix("CVSS:3.0/"))?;
        let mut seen = 0u32;
        let (mut av, mut ac, mut a) = (None, None, None);
        for part in rest.split('/') {
            let (key, value) = part.split_once(':')?;
            let index = CVSS_METRICS.iter().position(|(k, _)| *k == key)?;
            let allowed = CVSS_METRICS.get(index).map(|(_, values)| *values)?;
            if !allowed.contains(&value) {
                return None;
            }
            let bit = 1u32 << index;
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
            match key {
                "AV" => {
                    av = Some(match value {
                        "N" => AttackVector::Network,
                        "A" => AttackVector::Adjacent,
                        "L" => AttackVector::Local,
                        _ => AttackVector::Physical,
                    });
                }
                "AC" => {
                    ac = Some(match value {
                        "L" => AttackComplexity::Low,
                        _ => AttackComplexity::High,
                    });
                }
                "A" => {
                    a = Some(match value {
                        "N" => Impact::None,
                        "L" => Impact::Low,
                        _ => Impact::High,
                    });
                }
                _ => {}
            }
        }
        if seen & CVSS_BASE_MASK != CVSS_BASE_MASK {
            return None;
        }
        Some(CvssV3 {
            attack_vector: av?,
            attack_complexity: ac?,
            availability: a?,
        })
    }

    /// The summary slots this vector falls in: one per metric.
    pub(super) fn slots(self) -> [usize; 3] {
        [
            match self.attack_vector {
                AttackVector::Network => 0,
                AttackVector::Adjacent => 1,
                AttackVector::Local => 2,
                AttackVector::Physical => 3,
            },
            match self.attack_complexity {
                AttackComplexity::Low => 4,
                AttackComplexity::High => 5,
            },
            match self.availability {
                Impact::None => 6,
                Impact::Low => 7,
                Impact::High => 8,
            },
        ]
    }
}

/// The summary slot of a metric value, by its lower-case name.
pub(super) fn cvss_slot(metric: CvssMetric, value: &str) -> Option<usize> {
    match (metric, value) {
        (CvssMetric::AttackVector, "network") => Some(0),
        (CvssMetric::AttackVector, "adjacent") => Some(1),
        (CvssMetric::AttackVector, "local") => Some(2),
        (CvssMetric::AttackVector, "physical") => Some(3),
        (CvssMetric::AttackComplexity, "low") => Some(4),
        (CvssMetric::AttackComplexity, "high") => Some(5),
        (CvssMetric::Availability, "none") => Some(6),
        (CvssMetric::Availability, "low") => Some(7),
        (CvssMetric::Availability, "high") => Some(8),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    const FULL: &str = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H";

    #[test]
    fn cvss_parses_base_metrics_of_3_0_and_3_1() {
        let v = CvssV3::parse(FULL).unwrap();
        assert_eq!(v.attack_vector, AttackVector::Network);
        assert_eq!(v.attack_complexity, AttackComplexity::Low);
        assert_eq!(v.availability, Impact::High);
        let v = CvssV3::parse("CVSS:3.0/AV:P/AC:H/PR:L/UI:R/S:C/C:N/I:L/A:N").unwrap();
        assert_eq!(v.attack_vector, AttackVector::Physical);
        assert_eq!(v.attack_complexity, AttackComplexity::High);
        assert_eq!(v.availability, Impact::None);
        let v = CvssV3::parse("CVSS:3.1/AV:A/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:L").unwrap();
        assert_eq!(v.attack_vector, AttackVector::Adjacent);
        assert_eq!(v.availability, Impact::Low);
        assert_eq!(
            CvssV3::parse("CVSS:3.1/AV:L/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H").map(|v| v.attack_vector),
            Some(AttackVector::Local)
        );
    }

    #[test]
    fn cvss_accepts_any_order_and_temporal_environmental_metrics() {
        let v = CvssV3::parse("CVSS:3.1/A:L/I:H/C:H/S:U/UI:N/PR:N/AC:H/AV:A/E:P/RL:O/RC:C/CR:H/MAV:N/MA:X").unwrap();
        assert_eq!(v.attack_vector, AttackVector::Adjacent);
        assert_eq!(v.attack_complexity, AttackComplexity::High);
        assert_eq!(v.availability, Impact::Low);
    }

    #[test]
    fn cvss_rejects_malformed_vectors() {
        for bad in [
            "",
            "AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:2.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
            "AV:N/AC:L/Au:N/C:P/I:P/A:P",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/A:L",
            "CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:h",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/ZZ:1",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/AH",
            "cvss:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
        ] {
            assert_eq!(CvssV3::parse(bad), None, "{bad:?}");
        }
    }
}
