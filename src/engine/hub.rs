//! The Hugging Face hub: settings from the environment, cache-first downloads, search, cache listing.
