//! Labels as data: a [`Label`] is any name, a [`LabelSet`] is a scheme's
//! labels in order (a head carries its own), [`Scores`] are probabilities
//! over one set, and a [`LabelMap`] renames predictions into another scheme.
//! The four stance labels of `LABELS.md` ([`Stance`]) are the default set.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{MawqifError, Result};

/// The four stance labels of `LABELS.md`, in the scheme's decision order:
/// the default scheme, and the one the cue rules speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stance {
    Report,
    Quotation,
    Endorsement,
    Opinion,
}

impl Stance {
    pub const ALL: [Stance; 4] = [
        Stance::Report,
        Stance::Quotation,
        Stance::Endorsement,
        Stance::Opinion,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stance::Report => "report",
            Stance::Quotation => "quotation",
            Stance::Endorsement => "endorsement",
            Stance::Opinion => "opinion",
        }
    }

    pub fn label(self) -> Label {
        LabelSet::stance().0[self as usize].clone()
    }
}

impl fmt::Display for Stance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One label name of any scheme (`report`, `SUBJ`...). Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label(Arc<str>);

impl Label {
    /// A label name: non-empty, no whitespace, and none of `,` `=` (they
    /// separate `--map` and `--labels` entries).
    pub fn new(name: &str) -> Result<Self> {
        if name.is_empty()
            || name
                .chars()
                .any(|c| c.is_whitespace() || c == ',' || c == '=')
        {
            return Err(MawqifError::UnknownLabel(name.to_string()));
        }
        Ok(Label(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Label {
    type Err = MawqifError;
    fn from_str(s: &str) -> Result<Self> {
        Label::new(s)
    }
}

impl From<Stance> for Label {
    fn from(s: Stance) -> Self {
        s.label()
    }
}

impl PartialEq<Stance> for Label {
    fn eq(&self, other: &Stance) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Serialize for Label {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Label {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Label::new(&name).map_err(serde::de::Error::custom)
    }
}

/// A scheme's labels in order: the order of head outputs and of scores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSet(Arc<[Label]>);

impl LabelSet {
    /// At least two distinct labels.
    pub fn new(labels: Vec<Label>) -> Result<Self> {
        if labels.len() < 2 {
            return Err(MawqifError::BadLabelSet(format!(
                "{} label(s); a scheme needs at least two",
                labels.len()
            )));
        }
        for (k, l) in labels.iter().enumerate() {
            if labels[..k].contains(l) {
                return Err(MawqifError::BadLabelSet(format!("label {l:?} repeats")));
            }
        }
        if labels.len() == 4 && Stance::ALL.iter().zip(&labels).all(|(s, l)| l == s) {
            return Ok(Self::stance());
        }
        Ok(LabelSet(labels.into()))
    }

    /// The four stance labels (one shared set).
    pub fn stance() -> LabelSet {
        static STANCE: OnceLock<LabelSet> = OnceLock::new();
        STANCE
            .get_or_init(|| {
                LabelSet(
                    Stance::ALL
                        .iter()
                        .map(|s| Label(Arc::from(s.as_str())))
                        .collect(),
                )
            })
            .clone()
    }

    /// The scheme of labels found in data: the stance order when they are
    /// all stance labels, else sorted by name (so the same data always
    /// gives the same head layout).
    pub fn covering<'a>(labels: impl IntoIterator<Item = &'a Label>) -> Result<LabelSet> {
        let mut found: Vec<Label> = Vec::new();
        for l in labels {
            if !found.contains(l) {
                found.push(l.clone());
            }
        }
        if found.iter().all(|l| Stance::ALL.iter().any(|s| l == s)) {
            return Ok(Self::stance());
        }
        found.sort();
        Self::new(found)
    }

    /// Parse `a,b,c`.
    pub fn parse(list: &str) -> Result<LabelSet> {
        let labels = list
            .split(',')
            .map(|s| Label::new(s.trim()))
            .collect::<Result<Vec<_>>>()?;
        Self::new(labels)
    }

    pub fn is_stance(&self) -> bool {
        *self == Self::stance()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn labels(&self) -> &[Label] {
        &self.0
    }

    pub fn index(&self, label: &Label) -> Option<usize> {
        self.0.iter().position(|l| l == label)
    }

    pub fn contains(&self, label: &Label) -> bool {
        self.index(label).is_some()
    }
}

/// Serialized as a list of names (`head.json`'s `labels`).
impl Serialize for LabelSet {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for LabelSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let labels = Vec::<Label>::deserialize(d)?;
        LabelSet::new(labels).map_err(serde::de::Error::custom)
    }
}

/// Probabilities over one label set, in its order.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    labels: LabelSet,
    p: Vec<f32>,
}

impl Scores {
    /// `p` must have one value per label.
    pub fn new(labels: LabelSet, p: Vec<f32>) -> Result<Self> {
        if p.len() != labels.len() {
            return Err(MawqifError::BadLabelSet(format!(
                "{} scores for {} labels",
                p.len(),
                labels.len()
            )));
        }
        Ok(Scores { labels, p })
    }

    /// One value per label of `labels`, from `values` (missing ones are 0,
    /// extra ones ignored): for sums and means that are not distributions.
    pub fn from_values(labels: &LabelSet, values: impl IntoIterator<Item = f32>) -> Self {
        let mut p: Vec<f32> = values.into_iter().take(labels.len()).collect();
        p.resize(labels.len(), 0.0);
        Scores {
            labels: labels.clone(),
            p,
        }
    }

    /// Four stance probabilities.
    pub fn stance(p: [f32; 4]) -> Self {
        Scores {
            labels: LabelSet::stance(),
            p: p.to_vec(),
        }
    }

    /// Softmax of one logit per label (extra logits are ignored, missing ones are 0 mass).
    pub fn from_logits(labels: &LabelSet, logits: &[f32]) -> Self {
        let k = labels.len();
        let max = logits
            .iter()
            .take(k)
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        let mut p = vec![0f32; k];
        let mut sum = 0.0;
        for (slot, &z) in p.iter_mut().zip(logits) {
            *slot = (z - max).exp();
            sum += *slot;
        }
        for v in &mut p {
            *v /= sum;
        }
        Scores {
            labels: labels.clone(),
            p,
        }
    }

    /// All mass on one label of `labels` (none when it is not in the set).
    pub fn certain(labels: &LabelSet, label: &Label) -> Self {
        let mut p = vec![0f32; labels.len()];
        if let Some(k) = labels.index(label) {
            p[k] = 1.0;
        }
        Scores {
            labels: labels.clone(),
            p,
        }
    }

    /// The most probable label; ties go to the earlier label in the set's order.
    pub fn best(&self) -> Label {
        let mut best = 0;
        for k in 1..self.p.len() {
            if self.p[k] > self.p[best] {
                best = k;
            }
        }
        self.labels.0[best].clone()
    }

    /// The probability of `label` (0 for a label outside the set).
    pub fn get(&self, label: &Label) -> f32 {
        self.labels.index(label).map_or(0.0, |k| self.p[k])
    }

    pub fn labels(&self) -> &LabelSet {
        &self.labels
    }

    pub fn probabilities(&self) -> &[f32] {
        &self.p
    }
}

/// Serialized as an object keyed by label name, in the set's order.
impl Serialize for Scores {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.p.len()))?;
        for (l, p) in self.labels.0.iter().zip(&self.p) {
            map.serialize_entry(l.as_str(), p)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Scores {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct ScoresVisitor;
        impl<'de> Visitor<'de> for ScoresVisitor {
            type Value = Scores;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of label probabilities")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut access: A,
            ) -> std::result::Result<Scores, A::Error> {
                let mut labels = Vec::new();
                let mut p = Vec::new();
                while let Some((name, value)) = access.next_entry::<String, f32>()? {
                    labels.push(Label::new(&name).map_err(serde::de::Error::custom)?);
                    p.push(value);
                }
                let labels = LabelSet::new(labels).map_err(serde::de::Error::custom)?;
                Ok(Scores { labels, p })
            }
        }
        d.deserialize_map(ScoresVisitor)
    }
}

/// Renames labels (`report=OBJ,opinion=SUBJ`): applied to predictions
/// before output or scoring, to compare one scheme with a coarser one.
/// Labels it does not name keep their names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelMap {
    rules: Vec<(Label, Label)>,
}

impl LabelMap {
    /// `from=to` pairs separated by commas or new lines; `#` starts a comment.
    pub fn parse(spec: &str) -> Result<Self> {
        let mut rules: Vec<(Label, Label)> = Vec::new();
        for entry in spec.split([',', '\n']) {
            let entry = entry.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            let (from, to) = entry
                .split_once('=')
                .ok_or_else(|| MawqifError::BadLabelMap(format!("{entry:?} is not FROM=TO")))?;
            let from = Label::new(from.trim())?;
            let to = Label::new(to.trim())?;
            if rules.iter().any(|(f, _)| *f == from) {
                return Err(MawqifError::BadLabelMap(format!("{from} is mapped twice")));
            }
            rules.push((from, to));
        }
        if rules.is_empty() {
            return Err(MawqifError::BadLabelMap("no FROM=TO pairs".into()));
        }
        Ok(LabelMap { rules })
    }

    /// `spec` is a file of pairs when such a file exists, else the pairs themselves.
    pub fn from_arg(spec: &str) -> Result<Self> {
        let path = Path::new(spec);
        if !spec.contains('=') && path.is_file() {
            let text = std::fs::read_to_string(path).map_err(|e| MawqifError::io(path, e))?;
            return Self::parse(&text);
        }
        Self::parse(spec)
    }

    pub fn label(&self, label: &Label) -> Label {
        self.rules
            .iter()
            .find(|(from, _)| from == label)
            .map_or_else(|| label.clone(), |(_, to)| to.clone())
    }

    /// The target scheme of `labels`: mapped names in first-seen order.
    pub fn set(&self, labels: &LabelSet) -> Result<LabelSet> {
        let mut out: Vec<Label> = Vec::new();
        for l in labels.labels() {
            let m = self.label(l);
            if !out.contains(&m) {
                out.push(m);
            }
        }
        LabelSet::new(out)
    }

    /// Scores over the target scheme: the mass of labels that merge is summed.
    pub fn scores(&self, scores: &Scores) -> Result<Scores> {
        let target = self.set(scores.labels())?;
        let mut p = vec![0f32; target.len()];
        for (l, v) in scores.labels().labels().iter().zip(scores.probabilities()) {
            if let Some(k) = target.index(&self.label(l)) {
                p[k] += v;
            }
        }
        Scores::new(target, p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> LabelSet {
        LabelSet::new(names.iter().map(|n| Label::new(n).unwrap()).collect()).unwrap()
    }

    #[test]
    fn softmax_sums_to_one_and_picks_max() {
        let s = Scores::from_logits(&LabelSet::stance(), &[1.0, 3.0, 0.5, -2.0]);
        assert!((s.probabilities().iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(s.best(), Stance::Quotation.label());
        let two = Scores::from_logits(&set(&["OBJ", "SUBJ"]), &[0.0, 2.0]);
        assert_eq!(two.best().as_str(), "SUBJ");
        assert_eq!(two.probabilities().len(), 2);
    }

    #[test]
    fn label_names_and_sets() {
        for s in Stance::ALL {
            assert_eq!(s.as_str().parse::<Label>().unwrap(), s.label());
        }
        assert!("a b".parse::<Label>().is_err());
        assert!("".parse::<Label>().is_err());
        assert!(LabelSet::parse("SUBJ").is_err());
        assert!(LabelSet::parse("A,B,A").is_err());
        let stance_order = ["opinion", "report"].map(|n| Label::new(n).unwrap());
        assert!(LabelSet::covering(&stance_order).unwrap().is_stance());
        let other = ["SUBJ", "OBJ", "SUBJ"].map(|n| Label::new(n).unwrap());
        assert_eq!(LabelSet::covering(&other).unwrap(), set(&["OBJ", "SUBJ"]));
    }

    #[test]
    fn scores_serialize_in_set_order_and_back() {
        let s = Scores::new(set(&["z", "a", "m"]), vec![0.5, 0.25, 0.25]).unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"{"z":0.5,"a":0.25,"m":0.25}"#);
        assert_eq!(serde_json::from_str::<Scores>(&json).unwrap(), s);
    }

    #[test]
    fn map_merges_labels_and_sums_their_mass() {
        let map =
            LabelMap::parse("report=OBJ, quotation=OBJ\nendorsement=SUBJ # praise\nopinion=SUBJ")
                .unwrap();
        let s = map.scores(&Scores::stance([0.1, 0.2, 0.3, 0.4])).unwrap();
        assert_eq!(s.labels(), &set(&["OBJ", "SUBJ"]));
        assert!((s.get(&Label::new("SUBJ").unwrap()) - 0.7).abs() < 1e-6);
        assert_eq!(s.best().as_str(), "SUBJ");
        let partial = LabelMap::parse("opinion=SUBJ").unwrap();
        assert_eq!(
            partial.label(&Stance::Report.label()),
            Stance::Report.label()
        );
        assert!(LabelMap::parse("report").is_err());
        assert!(LabelMap::parse("a=B,a=C").is_err());
    }
}
