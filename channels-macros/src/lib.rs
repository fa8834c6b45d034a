//! Procedural macros for [`channels`](https://docs.rs/channels): `#[consumer]` and `routing!{}`.
//!
//! Use them through `channels` (`channels::consumer`, `channels::routing!`), which documents
//! them; this crate's version is pinned by `channels`, and the expansions name
//! `::channels::__private`, so the two always move together.
//!
//! Set `CHANNELS_MACROS_DEBUG=1` when compiling to print every expansion to stderr (cargo does
//! not track the variable: touch the file that uses the macro to rebuild it).

mod auth;
mod consumer;
mod diag;
/// The `path()` grammar, shared with the runtime (a symlink to `channels/src/path_grammar.rs`).
#[allow(dead_code)]
mod path_grammar;
mod routing;

use proc_macro::TokenStream;

/// Makes a struct a consumer, or wires an `impl` block's methods into it; see `channels::consumer`.
#[proc_macro_attribute]
pub fn consumer(args: TokenStream, item: TokenStream) -> TokenStream {
    debug("consumer", consumer::expand(args.into(), item.into())).into()
}

/// Serves a `#[consumer]` struct behind `AuthMiddlewareStack`; see `channels::auth`.
#[proc_macro_attribute]
pub fn auth(args: TokenStream, item: TokenStream) -> TokenStream {
    debug("auth", auth::expand(args.into(), item.into())).into()
}

/// Builds a `ProtocolTypeRouter` from a route table checked at compile time; see `channels::routing!`.
#[proc_macro]
pub fn routing(input: TokenStream) -> TokenStream {
    debug("routing!", routing::expand(input.into())).into()
}

fn debug(name: &str, tokens: proc_macro2::TokenStream) -> proc_macro2::TokenStream {
    if std::env::var_os("CHANNELS_MACROS_DEBUG").is_some() {
        eprintln!("---- {name} expansion ----\n{tokens}\n");
    }
    tokens
}
