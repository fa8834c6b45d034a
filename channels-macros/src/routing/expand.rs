//! A checked route table → builder calls, plus one `const` check per routed consumer.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;

use super::check::{captures, protocol_of};
use super::parse::{Key, PatternKind, Table, Target};
use crate::diag::{Krate, respan};

struct Expander {
    p: TokenStream,
    /// `const _: () = ...;` items checking each consumer against its route and protocol.
    checks: Vec<TokenStream>,
}

pub(crate) fn table(table: &Table) -> TokenStream {
    let krate = Krate::new(table.krate.clone());
    let mut expander = Expander { p: krate.private(), checks: Vec::new() };
    let p = expander.p.clone();
    let mut router = quote!(#p::ProtocolTypeRouter::new());
    for entry in &table.entries {
        let Ok(protocol) = protocol_of(&entry.key) else { continue };
        let app = expander.target(&entry.target, &protocol, None, &[]);
        router = match &entry.key {
            Key::Ident(ident) => quote!(#router.#ident(#app)),
            Key::Custom(name) => quote!(#router.protocol(#p::Protocol::from_name(#name), #app)),
        };
    }
    let checks = &expander.checks;
    quote! {
        {
            #(#checks)*
            #router
        }
    }
}

/// A route table, or middleware around one.
fn leads_to_routes(target: &Target) -> bool {
    match target {
        Target::Routes(_) => true,
        Target::Wrapper { inner, .. } => leads_to_routes(inner),
        Target::Consumer(_) | Target::Expr(_) => false,
    }
}

impl Expander {
    /// `route` is the innermost pattern on the way here, `captured` every kwarg captured so far.
    fn target(&mut self, target: &Target, protocol: &str, route: Option<&str>, captured: &[String]) -> TokenStream {
        let p = self.p.clone();
        match target {
            Target::Routes(routes) => {
                let routes = routes.iter().map(|route| {
                    let lit = &route.pattern.lit;
                    let mut inner = captured.to_vec();
                    inner.extend(captures(&route.pattern).unwrap_or_default());
                    let app = self.target(&route.target, protocol, Some(&lit.value()), &inner);
                    // A route table (bare or in middleware) nests: `nest` needs a `Router`, so
                    // middleware that cannot route is a compile error on it, not a silent 404.
                    let builder = match (&route.pattern.kind, leads_to_routes(&route.target)) {
                        (PatternKind::Path, false) => quote!(path),
                        (PatternKind::Regex, false) => quote!(re_path),
                        (PatternKind::Path, true) => quote!(nest),
                        (PatternKind::Regex, true) => quote!(re_nest),
                    };
                    let span = match &route.target {
                        Target::Wrapper { path, .. } => path.span(),
                        _ => lit.span(),
                    };
                    let builder = quote_spanned!(span=> #p::#builder);
                    quote!(#builder(#lit, #app))
                });
                let routes: Vec<_> = routes.collect();
                quote!(#p::URLRouter::new([#(#routes),*]))
            }
            Target::Wrapper { path, inner, args } => {
                let inner = self.target(inner, protocol, route, captured);
                quote!(#path(#inner #(, #args)*))
            }
            Target::Consumer(ty) => {
                let name = ty.to_token_stream().to_string().replace(' ', "");
                let route = route.unwrap_or("(no URL route)");
                let checks = [
                    quote!(#p::check_protocol(#name, <#ty as #p::Consumer>::PROTOCOL, #protocol)),
                    quote!(#p::check_url_params(#name, <#ty as #p::Consumer>::URL_PARAMS, #route, &[#(#captured),*])),
                ];
                for check in checks {
                    // Spanned on the consumer: a failed check is reported at its place in the table.
                    self.checks.push(respan(
                        quote! {
                            const _: () = if let ::core::option::Option::Some(failure) = #check {
                                ::core::panic!("{}", failure.as_str())
                            };
                        },
                        ty.span(),
                    ));
                }
                quote_spanned!(ty.span()=> <#ty as #p::Consumer>::app())
            }
            // `{ app }` is emitted as `app` (braces around an argument would trip `unused_braces`).
            Target::Expr(block) => match block.stmts.as_slice() {
                [syn::Stmt::Expr(expr, None)] => expr.to_token_stream(),
                _ => block.to_token_stream(),
            },
        }
    }
}
