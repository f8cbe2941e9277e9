//! Sequence classification, the DistilBERT path: labelled data, fine-tuning a classifier teacher,
//! distilling it into a student derived from every other layer, and the classification metrics.

pub mod data;
pub mod demo_data;
pub mod export;
pub mod metrics;
pub mod model;
pub mod parquet;
pub mod pipeline;
pub mod quantize;
pub mod recipe;
pub mod train;
