//! Error collection (every mistake reported at once, each on its own tokens) and the path to
//! the runtime crate.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote};

/// Collects errors; `finish` folds them into one `syn::Error` with `combine`.
///
/// A collector dropped without `finish` would lose what it recorded (a user's mistake that
/// compiles silently), so that is a bug in the macro and panics, as serde_derive's `Ctxt` does.
pub(crate) struct Errors(Option<Vec<syn::Error>>);

impl Default for Errors {
    fn default() -> Self {
        Errors(Some(Vec::new()))
    }
}

impl Errors {
    fn list(&mut self) -> &mut Vec<syn::Error> {
        self.0.get_or_insert_with(Vec::new)
    }

    pub(crate) fn at(&mut self, span: Span, message: impl std::fmt::Display) {
        self.list().push(syn::Error::new(span, message));
    }

    pub(crate) fn on(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.list().push(syn::Error::new_spanned(tokens, message));
    }

    pub(crate) fn push(&mut self, error: syn::Error) {
        self.list().push(error);
    }

    pub(crate) fn finish(mut self) -> Result<(), syn::Error> {
        let mut errors = self.0.take().unwrap_or_default().into_iter();
        let Some(mut first) = errors.next() else { return Ok(()) };
        for error in errors {
            first.combine(error);
        }
        Err(first)
    }
}

impl Drop for Errors {
    fn drop(&mut self) {
        if !std::thread::panicking() && self.0.as_ref().is_some_and(|errors| !errors.is_empty()) {
            panic!("channels-macros: errors were recorded and then dropped without `finish()`");
        }
    }
}

/// Where the runtime crate is: `::channels` unless the user said `crate = path`.
#[derive(Clone)]
pub(crate) struct Krate(Option<syn::Path>);

impl Krate {
    pub(crate) fn new(path: Option<syn::Path>) -> Self {
        Krate(path)
    }

    /// `::channels` (or the user's path).
    pub(crate) fn root(&self) -> TokenStream {
        match &self.0 {
            Some(path) => path.to_token_stream(),
            None => quote!(::channels),
        }
    }

    /// `::channels::__private`, where everything the expansions call lives.
    pub(crate) fn private(&self) -> TokenStream {
        let root = self.root();
        quote!(#root::__private)
    }
}

/// `tokens` with every span set to `span`, so that rustc reports errors in them at `span`.
pub(crate) fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tree| {
            if let TokenTree::Group(group) = &tree {
                let mut respanned = Group::new(group.delimiter(), respan(group.stream(), span));
                respanned.set_span(span);
                return TokenTree::Group(respanned);
            }
            tree.set_span(span);
            tree
        })
        .collect()
}
