//! The consumer model → tokens: glue that calls into `::channels::__private`.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;

use super::parse::{ConsumerImpl, ConsumerStruct, Kind, Param, Source};

/// The struct, its `FromScope` impl and its `Consumer` impl.
pub(crate) fn consumer_struct(model: &ConsumerStruct) -> TokenStream {
    let item = &model.item;
    let p = model.krate.private();
    let name = &item.ident;
    let (impl_generics, ty_generics, where_clause) = item.generics.split_for_impl();
    let consumer_name = name.to_string();
    let inits = model.fields.iter().filter(|field| !matches!(field.source, Source::Scope)).map(|field| {
        let ident = &field.ident;
        let ty = &field.ty;
        let field_name = ident.to_string();
        match &field.source {
            Source::Url { name, optional: false } => quote!(#ident: #p::url_param(&scope, #name)?),
            Source::Url { name, optional: true } => quote!(#ident: #p::optional_url_param(&scope, #name)?),
            Source::Init(expr) => quote!(#ident: #expr),
            // Spanned on the type, so "`T: Clone` is not satisfied" points at the field.
            Source::State => quote_spanned!(ty.span()=> #ident: #p::state::<#ty>(&scope, #consumer_name, #field_name)?),
            // Spanned on the type, so "`T: Default` is not satisfied" points at the field.
            Source::Default => quote_spanned!(ty.span()=> #ident: <#ty as ::core::default::Default>::default()),
            Source::Scope => unreachable!("filtered out above"),
        }
    });
    let Some((kind, kind_span)) = &model.kind else { return consumer_struct_fallback(model) };
    let protocol = kind.protocol_name();
    let url_params = model.url_params();
    let constructor = match kind {
        Kind::Websocket => quote!(websocket),
        Kind::Json => quote!(json),
        Kind::Http => quote!(http),
        Kind::Custom(_) => quote!(generic),
    };
    // Spanned on the protocol keyword: a missing trait impl is reported on `#[consumer(json)]`.
    let app = quote_spanned!(*kind_span=> #p::ConsumerApp::#constructor(<Self as #p::FromScope>::from_scope));
    // `#[auth(stack, ...)]`: the consumer behind the Cookie ► Session ► Auth stack.
    let (app_type, app) = match &model.auth {
        None => (quote!(#p::ConsumerApp<Self>), app),
        Some((auth, _)) => {
            let required = match (&auth.redirect, auth.required) {
                (Some(location), _) => quote!(.required_redirect(#location)),
                (None, true) => quote!(.required()),
                (None, false) => quote!(),
            };
            (
                quote!(#p::Wrapped<#p::AuthMiddlewareStack, #p::ConsumerApp<Self>>),
                quote!(#p::Middleware::wrap(#p::AuthMiddlewareStack::new() #required, #app)),
            )
        }
    };
    // `required` fails closed however the consumer is built: the check is in `from_scope`.
    let require_user = match &model.auth {
        Some((auth, _)) if auth.required => {
            let consumer = name.to_string();
            quote!(#p::require_user(&scope, #consumer)?;)
        }
        _ => quote!(),
    };
    // `methods = [...]`: checked first, also in `from_scope`, so it holds however it is built.
    let require_method = match &model.methods {
        Some(methods) => quote!(#p::require_method(&scope, &[#(#methods),*])?;),
        None => quote!(),
    };
    quote! {
        #item

        #[doc(hidden)]
        #[allow(non_upper_case_globals, unused_qualifications)]
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #p::FromScope for #name #ty_generics #where_clause {
                fn from_scope(scope: #p::Scope) -> ::core::result::Result<Self, #p::ConsumerError> {
                    #require_method
                    #require_user
                    ::core::result::Result::Ok(Self {
                        #(#inits,)*
                        scope,
                    })
                }
            }

            #[automatically_derived]
            impl #impl_generics #p::Consumer for #name #ty_generics #where_clause {
                const PROTOCOL: &'static str = #protocol;
                const URL_PARAMS: &'static [&'static str] = &[#(#url_params),*];
                type App = #app_type;

                fn app() -> Self::App {
                    #app
                }
            }
        };
    }
}

/// After an error: the struct, so that code using it still resolves, and nothing else.
pub(crate) fn consumer_struct_fallback(model: &ConsumerStruct) -> TokenStream {
    model.item.to_token_stream()
}

/// The impl block and the protocol trait's impl, which delegates to the block's methods.
pub(crate) fn consumer_impl(model: &ConsumerImpl) -> TokenStream {
    let item = &model.item;
    let p = model.krate.private();
    let self_ty = &item.self_ty;
    let (impl_generics, _, where_clause) = item.generics.split_for_impl();
    let trait_name = trait_name(&model.kind);
    let mut methods = Vec::new();
    for method in &model.lifecycle {
        let name = &method.name;
        let (signature, names) = lifecycle_signature(&model.kind, name, &p);
        // Each argument spanned on the user's parameter type: a type mismatch points there.
        let call_args = names.iter().zip(&method.params).map(|(arg, ty)| {
            let mut arg = arg.clone();
            arg.set_span(ty.span());
            arg
        });
        let call = quote_spanned!(method.span=> <#self_ty>::#name(self, #(#call_args),*).await);
        let body = match (&model.kind, name.to_string().as_str()) {
            (Kind::Custom(_), "handle") => call,
            _ => quote_spanned!(method.span=> #p::IntoConsumerResult::into_consumer_result(#call)),
        };
        methods.push(quote_spanned! {method.span=>
            #signature {
                #body
            }
        });
    }
    if let Some(incoming) = model.lifecycle.iter().find(|method| method.name == "receive_json") {
        let ty = &incoming.params[1];
        methods.insert(0, quote!(type Incoming = #ty;));
    }
    if !model.handlers.is_empty() {
        methods.push(handle_message(model, &p));
    }
    if let Some(span) = model.groups {
        methods.push(quote_spanned! {span=>
            #[allow(clippy::useless_conversion)]
            fn groups(&self) -> ::std::vec::Vec<::std::string::String> {
                <#self_ty>::groups(self).into_iter().map(::core::convert::Into::into).collect()
            }
        });
    }
    if let Some(span) = model.since {
        methods.push(quote_spanned! {span=>
            fn since(&self, requested: #p::Since) -> #p::Since {
                <#self_ty>::since(self, requested)
            }
        });
    }
    if let Some(span) = model.presence {
        methods.push(quote_spanned! {span=>
            fn presence(&self) -> ::core::option::Option<#p::Track> {
                <#self_ty>::presence(self)
            }
        });
    }
    // Only consumers with handlers or groups get a channel on the layer.
    let receives = !model.handlers.is_empty() || model.groups.is_some() || model.presence.is_some();
    methods.insert(0, quote!(const RECEIVES_CHANNEL_MESSAGES: bool = #receives;));
    quote! {
        #item

        #[doc(hidden)]
        #[allow(non_upper_case_globals, unused_qualifications)]
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #p::#trait_name for #self_ty #where_clause {
                #(#methods)*
            }
        };
    }
}

/// After an error: the impl block, and the protocol trait implemented with stubs so the struct's
/// side does not add "trait not implemented" to the real error.
pub(crate) fn consumer_impl_fallback(model: &ConsumerImpl) -> TokenStream {
    let item = &model.item;
    let p = model.krate.private();
    let self_ty = &item.self_ty;
    let (impl_generics, _, where_clause) = item.generics.split_for_impl();
    let trait_name = trait_name(&model.kind);
    let stub = quote!(::core::unreachable!("#[consumer] failed to compile"));
    let items = match &model.kind {
        Kind::Websocket => quote!(),
        Kind::Json => quote! {
            type Incoming = ();
            async fn receive_json(&mut self, _: &mut #p::Websocket, _: ()) -> ::core::result::Result<(), #p::ConsumerError> { #stub }
        },
        Kind::Http => quote! {
            async fn handle(&mut self, _: #p::Bytes, _: &mut #p::HttpResponse) -> ::core::result::Result<(), #p::ConsumerError> { #stub }
        },
        Kind::Custom(_) => quote! {
            async fn handle(&mut self, _: &#p::Outbox, _: #p::Inbound) -> ::core::result::Result<#p::Flow, #p::ConsumerError> { #stub }
        },
    };
    quote! {
        #item
        const _: () = {
            impl #impl_generics #p::#trait_name for #self_ty #where_clause { #items }
        };
    }
}

fn trait_name(kind: &Kind) -> TokenStream {
    match kind {
        Kind::Websocket => quote!(WebsocketConsumer),
        Kind::Json => quote!(JsonWebsocketConsumer),
        Kind::Http => quote!(HttpConsumer),
        Kind::Custom(_) => quote!(GenericConsumer),
    }
}

/// The trait method's signature, parameters named `arg0, arg1...` and typed as the trait says
/// (the JSON content is typed as the user's parameter, which is `Self::Incoming`).
fn lifecycle_signature(kind: &Kind, name: &syn::Ident, p: &TokenStream) -> (TokenStream, Vec<syn::Ident>) {
    let Some(method) = kind.methods().iter().find(|method| name == method.name) else {
        unreachable!("only the kind's lifecycle methods get here")
    };
    let output = if method.flow {
        quote!(::core::result::Result<#p::Flow, #p::ConsumerError>)
    } else {
        quote!(::core::result::Result<(), #p::ConsumerError>)
    };
    let names: Vec<syn::Ident> = method.params.iter().map(|(name, _)| quote::format_ident!("{name}")).collect();
    let types = method.params.iter().map(|(_, param)| match param {
        Param::Websocket => quote!(&mut #p::Websocket),
        Param::Message => quote!(#p::Message),
        Param::Incoming => quote!(Self::Incoming),
        Param::DecodeError => quote!(#p::JsonDecodeError),
        Param::Code => quote!(u16),
        Param::Body => quote!(#p::Bytes),
        Param::Response => quote!(&mut #p::HttpResponse),
        Param::Outbox => quote!(&#p::Outbox),
        Param::Event => quote!(#p::Inbound),
    });
    let inputs = names.iter().zip(types).map(|(name, ty)| quote!(#name: #ty));
    (quote!(async fn #name(&mut self, #(#inputs),*) -> #output), names)
}

/// `handle_message`: one `match` arm per `#[handler]`, decoding into the handler's type.
fn handle_message(model: &ConsumerImpl, p: &TokenStream) -> TokenStream {
    let self_ty = &model.item.self_ty;
    // A custom-protocol consumer answers with a `Flow`; a handler keeps it running.
    let (handle, output, done) = match &model.kind {
        Kind::Websocket | Kind::Json => (quote!(&mut #p::Websocket), quote!(()), None),
        Kind::Http => (quote!(&mut #p::HttpResponse), quote!(()), None),
        Kind::Custom(_) => (quote!(&#p::Outbox), quote!(#p::Flow), Some(quote!(#p::Flow::Continue))),
    };
    let finish = |result: TokenStream| match &done {
        Some(flow) => quote!(#result.map(|()| #flow)),
        None => result,
    };
    let skipped = finish(quote!(::core::result::Result::Ok(())));
    let arms = model.handlers.iter().map(|handler| {
        let message_type = &handler.message_type;
        let method = &handler.method;
        let ty = &handler.ty;
        let decode = quote_spanned!(ty.span()=> #p::decode_message::<#ty>(&message));
        let call = if handler.spawn {
            quote_spanned! {handler.span=> {
                let sender = handle.sender();
                handle.spawn(async move {
                    #p::IntoConsumerResult::into_consumer_result(<#self_ty>::#method(sender, event).await)
                });
                ::core::result::Result::Ok(())
            }}
        } else {
            quote_spanned! {handler.span=>
                #p::IntoConsumerResult::into_consumer_result(<#self_ty>::#method(self, handle, event).await)
            }
        };
        let call = finish(call);
        // `let else`, not a `match` on the decoding: a scrutinee lives until the end of its
        // `match`, so the decoded event would be stored twice while the handler runs.
        quote! {
            ::core::option::Option::Some(#message_type) => {
                let ::core::option::Option::Some(event) = #decode else {
                    return #skipped;
                };
                #call
            }
        }
    });
    let fallback = match &model.kind {
        Kind::Websocket | Kind::Json => quote!(#p::unhandled_websocket_message(handle, message).await),
        _ => finish(quote!(#p::unhandled_message(&message))),
    };
    quote! {
        async fn handle_message(
            &mut self,
            handle: #handle,
            message: #p::ChannelMessage,
        ) -> ::core::result::Result<#output, #p::ConsumerError> {
            match message.message_type() {
                #(#arms)*
                _ => #fallback,
            }
        }
    }
}
