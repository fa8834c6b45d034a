//! Error collection (every mistake reported at once, each on its own tokens) and the path to
//! the runtime crate.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote};

/// Collects errors; `finish` folds them into one `syn::Error` with `combine`.
#[derive(Default)]
pub(crate) struct Errors(Vec<syn::Error>);

impl Errors {
    pub(crate) fn at(&mut self, span: Span, message: impl std::fmt::Display) {
        self.0.push(syn::Error::new(span, message));
    }

    pub(crate) fn on(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.0.push(syn::Error::new_spanned(tokens, message));
    }

    pub(crate) fn push(&mut self, error: syn::Error) {
        self.0.push(error);
    }

    pub(crate) fn finish(self) -> Result<(), syn::Error> {
        let mut errors = self.0.into_iter();
        let Some(mut first) = errors.next() else { return Ok(()) };
        for error in errors {
            first.combine(error);
        }
        Err(first)
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
