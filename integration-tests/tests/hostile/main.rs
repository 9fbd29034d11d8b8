//! Hostile inputs and faults (issue 17): one module per finding, each run embedded and distributed.

mod poison_events;
mod subject_mismatch;
