//! Parsing admission documents into what the engine judges.
