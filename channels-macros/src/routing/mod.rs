//! `routing!{}`: a route table → `ProtocolTypeRouter` / `URLRouter` builder calls, with the
//! patterns validated and the consumers' URL parameters checked at compile time.
//!
//! ```text
//! routing! {
//!     [crate = path,]
//!     websocket: TARGET,          // also `http:` and "custom" protocol names
//! }
//! TARGET  = [ ROUTE, ... ]        // a URLRouter
//!         | Consumer              // a #[consumer] type
//!         | Wrapper(TARGET, args) // middleware: `Wrapper(inner, args...)` as written
//!         | { expression }        // any Application
//! ROUTE   = PATTERN => TARGET
//! PATTERN = "path/<int:id>/"      // path(); a pattern starting with `^` is a re_path()
//!         | path("...") | re_path("...")
//! ```

mod check;
mod expand;
mod parse;

use proc_macro2::TokenStream;

pub(crate) fn expand(input: TokenStream) -> TokenStream {
    let table = match syn::parse2::<parse::Table>(input) {
        Ok(table) => table,
        Err(err) => return failed(err, None),
    };
    match check::check(&table) {
        Ok(()) => expand::table(&table),
        Err(err) => failed(err, table.krate.clone()),
    }
}

/// The errors, inside a block that still has the type `routing!` promises, so that code using
/// the router gets no follow-up errors.
fn failed(err: syn::Error, krate: Option<syn::Path>) -> TokenStream {
    let errors = err.into_compile_error();
    let p = crate::diag::Krate::new(krate).private();
    quote::quote! {
        {
            #errors
            #p::ProtocolTypeRouter::new()
        }
    }
}
