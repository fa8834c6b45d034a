//! `#[consumer]`: on a struct, the consumer's fields and protocol (`FromScope` and the
//! `Consumer` impl `routing!` uses); on its `impl` block, the lifecycle methods and message
//! handlers (the protocol trait's impl, with a compile-time `match` on message types).

mod expand;
mod parse;

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::Item;

use crate::diag::Errors;

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let item = match syn::parse2::<Item>(item.clone()) {
        Ok(item) => item,
        Err(err) => return with_error(item, err),
    };
    let args = match syn::parse2::<parse::Args>(args) {
        Ok(args) => args,
        Err(err) => return with_error(item.into_token_stream(), err),
    };
    match item {
        Item::Struct(item) => expand_struct(args, item),
        Item::Impl(item) => expand_impl(args, item),
        Item::Enum(ref inner) => not_a_struct(&item, &inner.enum_token, "an enum"),
        Item::Union(ref inner) => not_a_struct(&item, &inner.union_token, "a union"),
        other => {
            let err = syn::Error::new_spanned(
                &other,
                "#[consumer] goes on a struct (the consumer's state) or on that struct's `impl` block (its methods)",
            );
            with_error(other.into_token_stream(), err)
        }
    }
}

fn expand_struct(args: parse::Args, item: syn::ItemStruct) -> TokenStream {
    let mut errors = Errors::default();
    let model = parse::ConsumerStruct::parse(args, item, &mut errors);
    let tokens = expand::consumer_struct(&model);
    match errors.finish() {
        Ok(()) => tokens,
        Err(err) => {
            let mut tokens = expand::consumer_struct_fallback(&model);
            tokens.extend(err.into_compile_error());
            tokens
        }
    }
}

fn expand_impl(args: parse::Args, item: syn::ItemImpl) -> TokenStream {
    let mut errors = Errors::default();
    let model = parse::ConsumerImpl::parse(args, item, &mut errors);
    match errors.finish() {
        Ok(()) => expand::consumer_impl(&model),
        Err(err) => {
            let mut tokens = expand::consumer_impl_fallback(&model);
            tokens.extend(err.into_compile_error());
            tokens
        }
    }
}

fn not_a_struct(item: &Item, keyword: &dyn ToTokens, what: &str) -> TokenStream {
    let err = syn::Error::new_spanned(
        keyword,
        format!(
            "#[consumer] cannot be used on {what}: a consumer is a struct with named fields (one instance per \
             connection), e.g. `struct Chat {{ #[url] room: String }}`"
        ),
    );
    with_error(item.to_token_stream(), err)
}

/// The user's tokens unchanged, then the error: one mistake gives one message.
fn with_error(mut item: TokenStream, err: syn::Error) -> TokenStream {
    item.extend(err.into_compile_error());
    item
}
