//! Procedural macros for [`channels`](https://docs.rs/channels). Use them through the `channels`
//! crate, which re-exports them; this crate is version-locked to it.
