//! `#[auth(stack[, required][, redirect = "/login/"])]` on a `#[consumer]` struct: the consumer
//! is served behind `AuthMiddlewareStack`, so `self.scope.user` is filled before `connect`.
//!
//! The work happens in `#[consumer]`, which reads this attribute off the struct: attribute macros
//! expand outermost first, so when `#[auth]` is outermost it re-emits the struct with
//! `#[consumer(..)]` moved in front of itself.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, Item, LitStr, Token};

use crate::diag::Errors;

mod kw {
    syn::custom_keyword!(stack);
    syn::custom_keyword!(required);
    syn::custom_keyword!(redirect);
}

/// The parsed `#[auth(...)]` options.
#[derive(Default)]
pub(crate) struct AuthArgs {
    pub(crate) required: bool,
    pub(crate) redirect: Option<LitStr>,
}

impl Parse for AuthArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if !input.peek(kw::stack) {
            return Err(input.error(
                "write `#[auth(stack)]` (the Cookie ► Session ► Auth stack), optionally with `required` \
                 and `redirect = \"/login/\"`",
            ));
        }
        input.parse::<kw::stack>()?;
        let mut args = AuthArgs::default();
        let mut errors = Errors::default();
        while !input.is_empty() {
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                break;
            }
            let lookahead = input.lookahead1();
            if lookahead.peek(kw::required) {
                let token = input.parse::<kw::required>()?;
                if args.required {
                    errors.at(token.span, "`required` is set twice");
                }
                args.required = true;
            } else if lookahead.peek(kw::redirect) {
                let token = input.parse::<kw::redirect>()?;
                input.parse::<Token![=]>()?;
                let location: LitStr = input.parse()?;
                if args.redirect.replace(location).is_some() {
                    errors.at(token.span, "`redirect` is set twice");
                }
            } else {
                return Err(lookahead.error());
            }
        }
        if let (Some(redirect), false) = (&args.redirect, args.required) {
            errors.on(redirect, "`redirect` applies to `required`: write `#[auth(stack, required, redirect = ...)]`");
        }
        errors.finish()?;
        Ok(args)
    }
}

fn is_attr(attr: &Attribute, name: &str) -> bool {
    attr.path().segments.last().is_some_and(|segment| segment.ident == name)
}

/// Takes the `#[auth(...)]` attributes off a consumer struct.
pub(crate) fn take(attrs: &mut Vec<Attribute>, errors: &mut Errors) -> Option<(AuthArgs, Span)> {
    let mut found = None;
    let mut kept = Vec::with_capacity(attrs.len());
    for attr in attrs.drain(..) {
        if !is_attr(&attr, "auth") {
            kept.push(attr);
            continue;
        }
        match attr.parse_args::<AuthArgs>() {
            Ok(_) if found.is_some() => errors.on(&attr, "`#[auth]` is given twice; keep one"),
            Ok(args) => found = Some((args, syn::spanned::Spanned::span(&attr))),
            Err(err) => errors.push(err),
        }
    }
    *attrs = kept;
    found
}

/// `#[auth]` as the outermost attribute: put `#[consumer]` first, so it sees this one.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut parsed = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Struct(item)) => item,
        Ok(other) => {
            let err = syn::Error::new(Span::call_site(), "#[auth] goes on a `#[consumer]` struct");
            let mut tokens = other.into_token_stream();
            tokens.extend(err.into_compile_error());
            return tokens;
        }
        Err(err) => {
            let mut tokens = item;
            tokens.extend(err.into_compile_error());
            return tokens;
        }
    };
    if let Err(err) = syn::parse2::<AuthArgs>(args.clone()) {
        let mut tokens = parsed.into_token_stream();
        tokens.extend(err.into_compile_error());
        return tokens;
    }
    let Some(position) = parsed.attrs.iter().position(|attr| is_attr(attr, "consumer")) else {
        let err = syn::Error::new(
            Span::call_site(),
            "#[auth] goes on a `#[consumer]` struct: add `#[consumer(websocket)]` (or json, http) to it",
        );
        let mut tokens = parsed.into_token_stream();
        tokens.extend(err.into_compile_error());
        return tokens;
    };
    let consumer = parsed.attrs.remove(position);
    parsed.attrs.insert(0, syn::parse_quote!(#[::channels::auth(#args)]));
    parsed.attrs.insert(0, consumer);
    quote!(#parsed)
}
