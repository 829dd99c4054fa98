//! Classifying a stream of documents in order, with memory bounded by the
//! batch: units of consecutive documents are gathered into batches of
//! `chunk` sentences, and each unit goes out as soon as its batch is done
//! (a long text does not wait for its own end).

use std::collections::VecDeque;

use serde_json::{Map, Value};

use crate::classifier::Classifier;
use crate::encode::RunOptions;
use crate::error::Result;
use crate::label::{LabelMap, LabelSet};
use crate::report::{ArticleProfile, LabelledUnit};
use crate::text::{Segment, Segmenter};

use super::records::{Document, InputFailure};

/// Where results go, in input order.
pub trait Sink {
    type Error;
    /// A document starts: after the previous one ended, before its own units.
    fn begin(&mut self, doc: &DocInfo) -> std::result::Result<(), Self::Error>;
    fn unit(&mut self, doc: &DocInfo, unit: &LabelledUnit) -> std::result::Result<(), Self::Error>;
    /// All of a document's units are out.
    fn end(
        &mut self,
        doc: &DocInfo,
        profile: &ArticleProfile,
    ) -> std::result::Result<(), Self::Error>;
    /// A batch of units is out: a good moment to flush.
    fn batch_done(&mut self) -> std::result::Result<(), Self::Error> {
        Ok(())
    }
    fn warning(&mut self, doc: &DocInfo, message: &str) -> std::result::Result<(), Self::Error>;
}

/// What identifies a document in the output.
#[derive(Debug, Clone)]
pub struct DocInfo {
    pub source: String,
    pub id: Option<String>,
    pub fields: Option<Map<String, Value>>,
    pub sentences: usize,
    /// Length of the text in bytes (for progress).
    pub bytes: usize,
}

impl DocInfo {
    /// The record id, or the file name.
    pub fn key(&self) -> &str {
        self.id.as_deref().unwrap_or(&self.source)
    }
}

/// What went wrong in a stream: an input (the run goes on) or the model or
/// the sink (the run stops).
#[derive(Debug)]
pub enum StreamError<E> {
    Input(InputFailure),
    Model(Box<crate::error::MawqifError>),
    Sink(E),
}

struct Pending {
    doc: usize,
    segment: Segment,
    previous: Option<String>,
}

struct OpenDoc {
    info: DocInfo,
    /// Units written so far.
    done: Vec<LabelledUnit>,
    /// Profiles need every unit; kept only when asked for.
    keep_units: bool,
    written: usize,
    /// `Sink::begin` was called: only once the documents before it ended,
    /// so that output (and the resume log) never interleaves two documents.
    begun: bool,
}

/// The streaming classifier.
pub struct Streamer<'a> {
    classifier: &'a Classifier,
    segmenter: Segmenter,
    options: RunOptions,
    chunk: usize,
    /// The next batch's size: it starts at one encoder batch and doubles up
    /// to `chunk`, so the first lines come out after one forward pass.
    next_chunk: usize,
    pending: VecDeque<Pending>,
    docs: VecDeque<OpenDoc>,
    next_doc: usize,
    first_doc: usize,
    profiles: bool,
    sentences: usize,
    documents: usize,
    /// Each document is one sentence, classified as it is (CheckThat! rows).
    whole_documents: bool,
    /// Renames predicted labels before they go out.
    map: Option<LabelMap>,
    /// The labels of the output (after the map), for profiles.
    labels: LabelSet,
}

impl<'a> Streamer<'a> {
    /// `chunk` sentences per classification call; `profiles` keeps each
    /// document's units until it ends, for its profile.
    pub fn new(
        classifier: &'a Classifier,
        options: RunOptions,
        chunk: usize,
        profiles: bool,
    ) -> Self {
        let next_chunk = options.batch_size.clamp(1, chunk.max(1));
        Self {
            classifier,
            segmenter: Segmenter::new(),
            options,
            chunk: chunk.max(1),
            next_chunk,
            pending: VecDeque::new(),
            docs: VecDeque::new(),
            next_doc: 0,
            first_doc: 0,
            profiles,
            sentences: 0,
            documents: 0,
            whole_documents: false,
            map: None,
            labels: classifier.labels(),
        }
    }

    /// Take each document as one sentence, without segmenting it.
    pub fn whole_documents(mut self, yes: bool) -> Self {
        self.whole_documents = yes;
        self
    }

    /// Rename predicted labels (and merge their scores) with `map`.
    pub fn with_map(mut self, map: LabelMap) -> Result<Self> {
        self.labels = map.set(&self.classifier.labels())?;
        self.map = Some(map);
        Ok(self)
    }

    /// Texts completed so far.
    pub fn documents(&self) -> usize {
        self.documents
    }

    /// Sentences classified so far.
    pub fn sentences(&self) -> usize {
        self.sentences
    }

    /// Take one document: segment it, refuse it alone if it cannot be
    /// classified, and classify every full batch.
    pub fn push<S: Sink>(
        &mut self,
        doc: Document,
        sink: &mut S,
    ) -> std::result::Result<(), StreamError<S::Error>> {
        let segments = if self.whole_documents {
            vec![Segment {
                index: 0,
                start: 0,
                end: doc.text.len(),
                text: doc.text.clone(),
            }]
        } else {
            self.segmenter.segment(&doc.text)
        };
        let texts: Vec<&str> = segments.iter().map(|s| s.text.as_str()).collect();
        let warnings = match self.classifier.check(&texts, &self.options) {
            Ok(w) => w,
            Err(error) => {
                return Err(StreamError::Input(InputFailure {
                    source: doc.source,
                    record: doc.id.clone(),
                    error: Box::new(error),
                }))
            }
        };
        let info = DocInfo {
            source: doc.source,
            id: doc.id,
            fields: doc.fields,
            sentences: segments.len(),
            bytes: doc.text.len(),
        };
        for w in &warnings {
            sink.warning(&info, w).map_err(StreamError::Sink)?;
        }
        if segments.is_empty() {
            sink.warning(&info, "no sentence with Arabic text found")
                .map_err(StreamError::Sink)?;
        }
        let index = self.next_doc;
        self.next_doc += 1;
        let mut previous = None;
        for segment in segments {
            let text = segment.text.clone();
            self.pending.push_back(Pending {
                doc: index,
                segment,
                previous: previous.replace(text),
            });
        }
        self.docs.push_back(OpenDoc {
            info,
            done: Vec::new(),
            keep_units: self.profiles,
            written: 0,
            begun: false,
        });
        while self.pending.len() >= self.next_chunk {
            self.run_batch(self.next_chunk, sink)?;
            self.next_chunk = (self.next_chunk * 2).min(self.chunk);
        }
        self.close_finished(sink)
    }

    /// Classify what is left and close every document.
    pub fn finish<S: Sink>(
        &mut self,
        sink: &mut S,
    ) -> std::result::Result<(), StreamError<S::Error>> {
        while !self.pending.is_empty() {
            self.run_batch(self.chunk, sink)?;
        }
        self.close_finished(sink)
    }

    fn run_batch<S: Sink>(
        &mut self,
        size: usize,
        sink: &mut S,
    ) -> std::result::Result<(), StreamError<S::Error>> {
        let n = size.min(self.pending.len());
        let batch: Vec<Pending> = self.pending.drain(..n).collect();
        let texts: Vec<&str> = batch.iter().map(|p| p.segment.text.as_str()).collect();
        let previous: Vec<Option<&str>> = batch.iter().map(|p| p.previous.as_deref()).collect();
        let result = self
            .classifier
            .classify_units(&texts, &previous, &self.options, |_| {})
            .map_err(|e| StreamError::Model(Box::new(e)))?;
        self.sentences += n;
        for (p, scores) in batch.iter().zip(result.scores) {
            // A batch spans documents: end the earlier ones before the next starts.
            self.close_finished(sink)?;
            let scores = match &self.map {
                Some(map) => map
                    .scores(&scores)
                    .map_err(|e| StreamError::Model(Box::new(e)))?,
                None => scores,
            };
            let open = &mut self.docs[p.doc - self.first_doc];
            if !open.begun {
                sink.begin(&open.info).map_err(StreamError::Sink)?;
                open.begun = true;
            }
            let mut unit = LabelledUnit::new(&open.info.source, &p.segment, scores);
            unit.id = open.info.id.clone();
            unit.fields = open.info.fields.clone();
            sink.unit(&open.info, &unit).map_err(StreamError::Sink)?;
            open.written += 1;
            if open.keep_units {
                open.done.push(unit);
            }
        }
        // Truncation warnings were given per document when it came in.
        sink.batch_done().map_err(StreamError::Sink)?;
        self.close_finished(sink)
    }

    /// End every leading document whose units are all out.
    fn close_finished<S: Sink>(
        &mut self,
        sink: &mut S,
    ) -> std::result::Result<(), StreamError<S::Error>> {
        while self
            .docs
            .front()
            .is_some_and(|d| d.written == d.info.sentences)
        {
            let Some(doc) = self.docs.pop_front() else {
                break;
            };
            self.first_doc += 1;
            self.documents += 1;
            if !doc.begun {
                sink.begin(&doc.info).map_err(StreamError::Sink)?;
            }
            let profile = ArticleProfile::new(doc.info.key(), &self.labels, &doc.done);
            sink.end(&doc.info, &profile).map_err(StreamError::Sink)?;
        }
        Ok(())
    }
}

/// Classify every item of `items` into `sink`: failures of single inputs
/// go to `on_failure` and the run goes on, unless `on_failure` says stop
/// (then the documents before the failure are finished first).
/// Returns the number of documents classified.
pub fn run<S: Sink>(
    streamer: &mut Streamer<'_>,
    items: impl Iterator<Item = super::records::Item>,
    sink: &mut S,
    mut on_failure: impl FnMut(&InputFailure) -> bool,
) -> std::result::Result<usize, StreamError<S::Error>> {
    let mut documents = 0;
    for item in items {
        let pushed = match item {
            Ok(doc) => streamer.push(doc, sink),
            Err(failure) => Err(StreamError::Input(failure)),
        };
        match pushed {
            Ok(()) => documents += 1,
            Err(StreamError::Input(failure)) => {
                if !on_failure(&failure) {
                    // The inputs before the bad one are still written whole.
                    streamer.finish(sink)?;
                    return Err(StreamError::Input(failure));
                }
            }
            Err(other) => return Err(other),
        }
    }
    streamer.finish(sink)?;
    Ok(documents)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the calls a sink gets.
    #[derive(Default)]
    struct Recorder(Vec<String>);

    impl Sink for Recorder {
        type Error = std::convert::Infallible;
        fn begin(&mut self, doc: &DocInfo) -> std::result::Result<(), Self::Error> {
            self.0.push(format!("begin {}", doc.key()));
            Ok(())
        }
        fn unit(
            &mut self,
            doc: &DocInfo,
            _: &LabelledUnit,
        ) -> std::result::Result<(), Self::Error> {
            self.0.push(format!("unit {}", doc.key()));
            Ok(())
        }
        fn end(
            &mut self,
            doc: &DocInfo,
            _: &ArticleProfile,
        ) -> std::result::Result<(), Self::Error> {
            self.0.push(format!("end {}", doc.key()));
            Ok(())
        }
        fn warning(&mut self, _: &DocInfo, _: &str) -> std::result::Result<(), Self::Error> {
            Ok(())
        }
    }

    #[test]
    fn documents_never_interleave_even_when_a_batch_spans_several() {
        let classifier = Classifier::Cues;
        // A chunk of 5 sentences cuts through documents of 2 and 3 sentences.
        let mut streamer = Streamer::new(&classifier, RunOptions::default(), 5, false);
        let mut sink = Recorder::default();
        let texts = [
            "قال الوزير إن الاجتماع انتهى. وأضاف أن الحوار مستمر.",
            "أعلنت الحكومة خطة جديدة. وصل الوفد إلى طرابلس. بدأت الجلسة صباحاً.",
            "",
            "أكد المتحدث أن المفاوضات ناجحة. وقال إن الاتفاق قريب.",
        ];
        for (i, text) in texts.iter().enumerate() {
            let doc = Document {
                source: "t".into(),
                id: Some(format!("d{i}")),
                text: text.to_string(),
                fields: None,
            };
            if streamer.push(doc, &mut sink).is_err() {
                panic!("push {i}");
            }
        }
        if streamer.finish(&mut sink).is_err() {
            panic!("finish");
        }
        let mut expected = Vec::new();
        for (i, n) in [2, 3, 0, 2].into_iter().enumerate() {
            expected.push(format!("begin d{i}"));
            expected.extend(std::iter::repeat_n(format!("unit d{i}"), n));
            expected.push(format!("end d{i}"));
        }
        assert_eq!(sink.0, expected);
    }
}
