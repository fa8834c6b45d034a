//! `#[consumer]` input → a small model: what the user wrote, validated, with every mistake
//! recorded on its own tokens.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{
    Attribute, Expr, Fields, FieldsNamed, FnArg, Ident, ImplItem, ItemImpl, ItemStruct, LitStr, Meta, Path, ReturnType,
    Token, Type, parse_quote,
};

use crate::diag::{Errors, Krate};

mod kw {
    syn::custom_keyword!(websocket);
    syn::custom_keyword!(json);
    syn::custom_keyword!(http);
    syn::custom_keyword!(protocol);
    syn::custom_keyword!(spawn);
    syn::custom_keyword!(methods);
}

/// The protocol a consumer struct speaks, from `#[consumer(...)]`.
#[derive(Clone)]
pub(crate) enum Kind {
    Websocket,
    Json,
    Http,
    /// `protocol = "name"`: a `GenericConsumer` for a custom protocol.
    Custom(LitStr),
}

impl Kind {
    /// The `ProtocolTypeRouter` key the consumer belongs under.
    pub(crate) fn protocol_name(&self) -> String {
        match self {
            Kind::Websocket | Kind::Json => "websocket".to_owned(),
            Kind::Http => "http".to_owned(),
            Kind::Custom(name) => name.value(),
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Kind::Websocket => "WebSocket",
            Kind::Json => "JSON WebSocket",
            Kind::Http => "HTTP",
            Kind::Custom(_) => "custom-protocol",
        }
    }

    /// The name of the handle a method gets, as shown in messages.
    fn handle_param(&self) -> &'static str {
        match self {
            Kind::Websocket | Kind::Json => "ws: &mut Websocket",
            Kind::Http => "response: &mut HttpResponse",
            Kind::Custom(_) => "outbox: &Outbox",
        }
    }

    /// The lifecycle methods of this kind.
    pub(crate) fn methods(&self) -> &'static [Method] {
        match self {
            Kind::Websocket => WEBSOCKET,
            Kind::Json => JSON,
            Kind::Http => HTTP,
            Kind::Custom(_) => CUSTOM,
        }
    }
}

/// A parameter of a lifecycle method after `&mut self`; `expand.rs` spells its type.
#[derive(Clone, Copy)]
pub(crate) enum Param {
    Websocket,
    Message,
    Incoming,
    DecodeError,
    Code,
    Body,
    Response,
    Outbox,
    Event,
}

/// One lifecycle method of a kind of consumer. This one table is what parsing checks a user's
/// method against (arity, the shape shown in messages) and what the expansion writes the
/// protocol trait's method from (parameter names and types, return type).
pub(crate) struct Method {
    pub(crate) name: &'static str,
    pub(crate) params: &'static [(&'static str, Param)],
    /// Returns `Result<Flow, ConsumerError>` (a custom protocol's `handle`) instead of `Result<()>`.
    pub(crate) flow: bool,
    /// The signature as shown in messages, after the name.
    pub(crate) shape: &'static str,
}

const CONNECT: Method = Method {
    name: "connect",
    params: &[("ws", Param::Websocket)],
    flow: false,
    shape: "(&mut self, ws: &mut Websocket)",
};
const DISCONNECT: Method =
    Method { name: "disconnect", params: &[("code", Param::Code)], flow: false, shape: "(&mut self, code: u16)" };

const WEBSOCKET: &[Method] = &[
    CONNECT,
    Method {
        name: "receive",
        params: &[("ws", Param::Websocket), ("message", Param::Message)],
        flow: false,
        shape: "(&mut self, ws: &mut Websocket, message: Message)",
    },
    DISCONNECT,
];

const JSON: &[Method] = &[
    CONNECT,
    Method {
        name: "receive_json",
        params: &[("ws", Param::Websocket), ("content", Param::Incoming)],
        flow: false,
        shape: "(&mut self, ws: &mut Websocket, content: T)` with `T: Deserialize",
    },
    Method {
        name: "decode_error",
        params: &[("ws", Param::Websocket), ("error", Param::DecodeError)],
        flow: false,
        shape: "(&mut self, ws: &mut Websocket, error: JsonDecodeError)",
    },
    DISCONNECT,
];

const HTTP: &[Method] = &[
    Method {
        name: "handle",
        params: &[("body", Param::Body), ("response", Param::Response)],
        flow: false,
        shape: "(&mut self, body: Bytes, response: &mut HttpResponse)",
    },
    Method { name: "disconnect", params: &[], flow: false, shape: "(&mut self)" },
];

const CUSTOM: &[Method] = &[Method {
    name: "handle",
    params: &[("outbox", Param::Outbox), ("event", Param::Event)],
    flow: true,
    shape: "(&mut self, outbox: &Outbox, event: Inbound) -> Result<Flow, ConsumerError>",
}];

/// True for a lifecycle method name of any kind: such a method in a `#[consumer]` impl block is
/// wired into the protocol trait.
fn is_lifecycle(name: &str) -> bool {
    [WEBSOCKET, JSON, HTTP, CUSTOM].iter().any(|methods| methods.iter().any(|method| method.name == name))
}

/// The arguments of `#[consumer(...)]`.
#[derive(Default)]
pub(crate) struct Args {
    kind: Option<(Kind, Span)>,
    krate: Option<Path>,
    /// `methods = ["GET", "POST"]`, with the span of `methods`.
    methods: Option<(Vec<LitStr>, Span)>,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args::default();
        let mut errors = Errors::default();
        while !input.is_empty() {
            let lookahead = input.lookahead1();
            let (kind, span) = if lookahead.peek(kw::websocket) {
                (Kind::Websocket, input.parse::<kw::websocket>()?.span)
            } else if lookahead.peek(kw::json) {
                (Kind::Json, input.parse::<kw::json>()?.span)
            } else if lookahead.peek(kw::http) {
                (Kind::Http, input.parse::<kw::http>()?.span)
            } else if lookahead.peek(kw::protocol) {
                let span = input.parse::<kw::protocol>()?.span;
                input.parse::<Token![=]>()?;
                let name: LitStr = input.parse()?;
                check_protocol_name(&name, &mut errors);
                (Kind::Custom(name), span)
            } else if lookahead.peek(kw::methods) {
                let span = input.parse::<kw::methods>()?.span;
                input.parse::<Token![=]>()?;
                let content;
                syn::bracketed!(content in input);
                let methods = content.parse_terminated(<LitStr as Parse>::parse, Token![,])?;
                let methods: Vec<LitStr> = methods.into_iter().collect();
                for method in &methods {
                    check_method(method, &mut errors);
                }
                if methods.is_empty() {
                    errors.at(span, "name at least one method, e.g. `methods = [\"GET\", \"POST\"]`");
                }
                if args.methods.replace((methods, span)).is_some() {
                    errors.at(span, "`methods` is set twice");
                }
                next_arg(input)?;
                continue;
            } else if lookahead.peek(Token![crate]) {
                let token = input.parse::<Token![crate]>()?;
                input.parse::<Token![=]>()?;
                let path = Path::parse_mod_style(input)?;
                if args.krate.replace(path).is_some() {
                    errors.on(token, "`crate` is set twice");
                }
                next_arg(input)?;
                continue;
            } else {
                return Err(lookahead.error());
            };
            match &args.kind {
                Some((first, _)) => errors.at(
                    span,
                    format!(
                        "the protocol is already set (`{}`): a consumer speaks one protocol; keep one of them",
                        first.protocol_keyword()
                    ),
                ),
                None => args.kind = Some((kind, span)),
            }
            next_arg(input)?;
        }
        errors.finish()?;
        Ok(args)
    }
}

impl Kind {
    fn protocol_keyword(&self) -> String {
        match self {
            Kind::Websocket => "websocket".to_owned(),
            Kind::Json => "json".to_owned(),
            Kind::Http => "http".to_owned(),
            Kind::Custom(name) => format!("protocol = {:?}", name.value()),
        }
    }
}

fn next_arg(input: ParseStream<'_>) -> syn::Result<()> {
    if !input.is_empty() {
        input.parse::<Token![,]>()?;
    }
    Ok(())
}

/// An HTTP method as the request line spells it: an uppercase token.
fn check_method(method: &LitStr, errors: &mut Errors) {
    let value = method.value();
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_alphabetic() || byte == b'-') {
        errors.on(method, "an HTTP method is a word such as \"GET\" or \"POST\"");
    } else if value.bytes().any(|byte| byte.is_ascii_lowercase()) {
        errors.on(
            method,
            format!(
                "HTTP methods are case-sensitive and requests spell them in capitals: write {:?}",
                value.to_ascii_uppercase()
            ),
        );
    }
}

fn check_protocol_name(name: &LitStr, errors: &mut Errors) {
    let value = name.value();
    if value == "websocket" || value == "http" {
        errors.on(name, format!("`{value}` is built in: write `#[consumer({value})]`"));
    } else if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) {
        errors.on(name, "a protocol name is non-empty ASCII letters, digits, `.`, `-` and `_`, e.g. \"chat\"");
    }
}

/// How one field of the consumer struct is filled when a connection opens.
pub(crate) enum Source {
    /// The `scope` field: the connection's scope.
    Scope,
    /// `#[url]` / `#[url("name")]`: parsed from `url_route.kwargs` with `FromStr`.
    Url { name: String, optional: bool },
    /// `#[init(expr)]`.
    Init(Expr),
    /// `#[state]`: a clone of the app's extension of the field's type.
    State,
    /// `Default::default()`.
    Default,
}

pub(crate) struct FieldInit {
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
    pub(crate) source: Source,
}

/// `#[consumer(...)] struct ...`.
pub(crate) struct ConsumerStruct {
    /// The struct as it will be emitted: field attributes consumed, `scope` added if absent.
    pub(crate) item: ItemStruct,
    pub(crate) kind: Option<(Kind, Span)>,
    pub(crate) krate: Krate,
    pub(crate) fields: Vec<FieldInit>,
    /// `#[auth(stack, ...)]` on the struct.
    pub(crate) auth: Option<(crate::auth::AuthArgs, Span)>,
    /// `methods = [...]`: the HTTP methods the consumer answers (all when `None`).
    pub(crate) methods: Option<Vec<LitStr>>,
}

impl ConsumerStruct {
    pub(crate) fn parse(args: Args, mut item: ItemStruct, errors: &mut Errors) -> ConsumerStruct {
        let krate = Krate::new(args.krate);
        let auth = crate::auth::take(&mut item.attrs, errors);
        if args.kind.is_none() {
            errors.at(
                Span::call_site(),
                "say which protocol the consumer speaks: `#[consumer(websocket)]`, `#[consumer(json)]`, \
                 `#[consumer(http)]` or `#[consumer(protocol = \"name\")]`",
            );
        }
        let mut fields = Vec::new();
        match &mut item.fields {
            Fields::Named(named) => {
                for field in &mut named.named {
                    let Some(ident) = field.ident.clone() else { continue };
                    let source = field_source(&ident, &mut field.attrs, &field.ty, errors);
                    fields.push(FieldInit { ident, ty: field.ty.clone(), source });
                }
            }
            Fields::Unit => {
                item.fields = Fields::Named(FieldsNamed { brace_token: Default::default(), named: Default::default() });
                item.semi_token = None;
            }
            Fields::Unnamed(unnamed) => errors.on(
                &*unnamed,
                "a consumer cannot be a tuple struct: its fields are filled by name (`scope`, `#[url]` \
                 parameters); name them, e.g. `struct Chat { #[url] room: String }`",
            ),
        }
        if !fields.iter().any(|field| matches!(field.source, Source::Scope))
            && let Fields::Named(named) = &mut item.fields
        {
            let root = krate.root();
            named.named.insert(
                0,
                parse_quote! {
                    /// The connection's scope (added by `#[consumer]`).
                    pub scope: #root::Scope
                },
            );
            fields.push(FieldInit {
                ident: parse_quote!(scope),
                ty: parse_quote!(#root::Scope),
                source: Source::Scope,
            });
        }
        let methods = args.methods.map(|(methods, span)| {
            if let Some((kind, _)) = &args.kind
                && !matches!(kind, Kind::Http)
            {
                errors.at(
                    span,
                    format!(
                        "`methods` restricts HTTP requests; a {} consumer answers no HTTP methods",
                        kind.describe()
                    ),
                );
            }
            methods
        });
        ConsumerStruct { item, kind: args.kind, krate, fields, auth, methods }
    }

    /// The kwargs the required `#[url]` fields read.
    pub(crate) fn url_params(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for field in &self.fields {
            if let Source::Url { name, optional: false } = &field.source
                && !names.contains(&name.as_str())
            {
                names.push(name);
            }
        }
        names
    }
}

/// Reads and removes the `#[url]` / `#[state]` / `#[init]` attributes of one field.
fn field_source(ident: &Ident, attrs: &mut Vec<Attribute>, ty: &Type, errors: &mut Errors) -> Source {
    let mut source: Option<(Source, Attribute)> = None;
    let mut kept = Vec::with_capacity(attrs.len());
    for attr in attrs.drain(..) {
        let parsed = if attr.path().is_ident("url") {
            url_attr(ident, &attr, ty)
        } else if attr.path().is_ident("state") {
            match &attr.meta {
                Meta::Path(_) => Ok(Source::State),
                _ => Err(syn::Error::new_spanned(
                    &attr,
                    "write `#[state]`: the field gets the app's value of its type, given with \
                     `.extension(value)` on the router",
                )),
            }
        } else if attr.path().is_ident("init") {
            attr.parse_args::<Expr>().map(Source::Init).map_err(|err| {
                syn::Error::new(err.span(), format!("write `#[init(expression)]`, e.g. `#[init(Vec::new())]`: {err}"))
            })
        } else {
            kept.push(attr);
            continue;
        };
        match parsed {
            Ok(_) if source.is_some() => {
                errors.on(&attr, "a field takes one of `#[url]`, `#[state]` or `#[init(...)]`, once");
            }
            Ok(parsed) => source = Some((parsed, attr)),
            Err(err) => errors.push(err),
        }
    }
    *attrs = kept;
    if ident == "scope" {
        if let Some((_, attr)) = source {
            errors
                .on(attr, "the `scope` field is filled with the connection's scope; it takes no `#[url]`, `#[state]` or `#[init]`");
        }
        return Source::Scope;
    }
    source.map_or(Source::Default, |(source, _)| source)
}

fn url_attr(ident: &Ident, attr: &Attribute, ty: &Type) -> syn::Result<Source> {
    let name = match &attr.meta {
        Meta::Path(_) => ident.to_string().trim_start_matches("r#").to_owned(),
        Meta::List(_) => {
            let name: LitStr = attr.parse_args()?;
            let value = name.value();
            if !crate::path_grammar::is_param_name(&value) {
                return Err(syn::Error::new_spanned(name, "a URL parameter name is an identifier, e.g. \"room_id\""));
            }
            value
        }
        Meta::NameValue(_) => {
            return Err(syn::Error::new_spanned(
                attr,
                "write `#[url]` (the kwarg named like the field) or `#[url(\"kwarg\")]`",
            ));
        }
    };
    Ok(Source::Url { name, optional: is_option(ty) })
}

/// `Option<T>` (or `std::option::Option<T>`...): an optional URL parameter.
fn is_option(ty: &Type) -> bool {
    match ty {
        Type::Path(path) if path.qself.is_none() => {
            path.path.segments.last().is_some_and(|last| last.ident == "Option" && !last.arguments.is_empty())
        }
        _ => false,
    }
}

/// A `#[handler("type")]` method.
pub(crate) struct Handler {
    pub(crate) message_type: LitStr,
    pub(crate) method: Ident,
    pub(crate) ty: Type,
    pub(crate) span: Span,
    /// `#[handler("type", spawn)]`: runs as its own task, `(sender: WebsocketSender, event: T)`.
    pub(crate) spawn: bool,
}

/// A lifecycle method present in the impl block.
pub(crate) struct Lifecycle {
    pub(crate) name: Ident,
    /// The parameter types after `&mut self`.
    pub(crate) params: Vec<Type>,
    pub(crate) span: Span,
}

/// `#[consumer] impl Chat { ... }`.
pub(crate) struct ConsumerImpl {
    /// The impl block as it will be emitted (`#[handler]` attributes consumed).
    pub(crate) item: ItemImpl,
    pub(crate) krate: Krate,
    pub(crate) kind: Kind,
    pub(crate) lifecycle: Vec<Lifecycle>,
    pub(crate) handlers: Vec<Handler>,
    /// The span of a `fn groups(&self)`, if the block has one.
    pub(crate) groups: Option<Span>,
    /// The span of a `fn since(&self, requested: Since) -> Since`, if the block has one.
    pub(crate) since: Option<Span>,
    /// The span of a `fn presence(&self) -> Option<Track>`, if the block has one.
    pub(crate) presence: Option<Span>,
}

impl ConsumerImpl {
    pub(crate) fn parse(args: Args, mut item: ItemImpl, errors: &mut Errors) -> ConsumerImpl {
        if let Some((_, span)) = &args.methods {
            errors.at(*span, "`methods` goes on the struct: `#[consumer(http, methods = [...])] struct ...`");
        }
        if let Some((kind, span)) = &args.kind {
            errors.at(
                *span,
                format!(
                    "the protocol goes on the struct (`#[consumer({})] struct ...`); on the impl block write \
                     `#[consumer]`",
                    kind.protocol_keyword()
                ),
            );
        }
        if let Some((trait_path, _)) = &item.trait_ {
            errors.on(
                trait_path,
                "#[consumer] goes on the consumer's own impl block (`impl Chat { ... }`): it writes the consumer \
                 trait's impl from the methods it finds there",
            );
        }
        let mut lifecycle = Vec::new();
        let mut handlers: Vec<Handler> = Vec::new();
        let mut handler_sigs = Vec::new();
        let mut groups = None;
        let mut since = None;
        let mut presence = None;
        for impl_item in &mut item.items {
            let ImplItem::Fn(method) = impl_item else { continue };
            let handler_attr = take_handler_attr(&mut method.attrs, errors);
            let name = method.sig.ident.clone();
            if name == "groups" && handler_attr.is_none() {
                check_groups_signature(&method.sig, errors);
                groups = Some(method.sig.span());
            } else if name == "since" && handler_attr.is_none() {
                check_plain_signature(&method.sig, "`fn since(&self, requested: Since) -> Since`", 1, errors);
                since = Some(method.sig.span());
            } else if name == "presence" && handler_attr.is_none() {
                check_plain_signature(&method.sig, "`fn presence(&self) -> Option<Track>`", 0, errors);
                presence = Some(method.sig.span());
            } else if let Some((message_type, spawn)) = handler_attr {
                if is_lifecycle(&name.to_string())
                    || matches!(name.to_string().as_str(), "groups" | "since" | "presence")
                {
                    errors.on(&name, format!("`{name}` is a lifecycle method; give the handler another name"));
                    continue;
                }
                check_message_type(&message_type, &handlers, errors);
                handler_sigs.push((method.sig.clone(), spawn));
                let ty = method.sig.inputs.iter().filter_map(typed).nth(1).cloned().unwrap_or_else(|| parse_quote!(()));
                handlers.push(Handler { message_type, method: name, ty, span: method.sig.span(), spawn });
            } else if is_lifecycle(&name.to_string()) {
                let params = method.sig.inputs.iter().filter_map(typed).cloned().collect();
                lifecycle.push((Lifecycle { name, params, span: method.sig.span() }, method.sig.clone()));
            }
        }
        let (kind, reason) = infer_kind(&lifecycle);
        for (method, sig) in &lifecycle {
            match kind.methods().iter().find(|known| method.name == known.name) {
                Some(known) => {
                    check_signature(sig, known.params.len(), &format!("`{}{}`", method.name, known.shape), errors);
                    for ((name, param), ty) in known.params.iter().zip(&method.params) {
                        if matches!(param, Param::Incoming) {
                            check_by_value(ty, name, errors);
                        }
                    }
                }
                None => errors.on(
                    &method.name,
                    format!(
                        "`{}` is not a method of {} consumers ({reason}); theirs are {}",
                        method.name,
                        kind.describe(),
                        list(kind.methods().iter().map(|known| known.name)),
                    ),
                ),
            }
        }
        for (sig, spawn) in &handler_sigs {
            if *spawn {
                check_spawned_signature(sig, &kind, errors);
                continue;
            }
            let shape =
                format!("`{}(&mut self, {}, message: T)` with `T: Deserialize`", sig.ident, kind.handle_param());
            check_signature(sig, 2, &shape, errors);
            if let Some(event) = sig.inputs.iter().filter_map(typed).nth(1) {
                check_by_value(event, "event", errors);
            }
        }
        let lifecycle = lifecycle.into_iter().map(|(method, _)| method).collect();
        ConsumerImpl { item, krate: Krate::new(args.krate), kind, lifecycle, handlers, groups, since, presence }
    }
}

/// The protocol of an impl block, from the lifecycle methods it defines, and why.
fn infer_kind(lifecycle: &[(Lifecycle, syn::Signature)]) -> (Kind, String) {
    let has = |name: &str| lifecycle.iter().find(|(method, _)| method.name == name);
    if let Some((method, _)) = has("receive_json").or_else(|| has("decode_error")) {
        return (Kind::Json, format!("this impl block is one because it has `{}`", method.name));
    }
    if let Some((_, sig)) = has("handle") {
        let returns_flow = match &sig.output {
            ReturnType::Type(_, ty) => mentions(ty, "Flow"),
            ReturnType::Default => false,
        };
        if returns_flow {
            let name = LitStr::new("custom", Span::call_site());
            return (Kind::Custom(name), "this impl block is one because its `handle` returns a `Flow`".to_owned());
        }
        return (Kind::Http, "this impl block is one because it has `handle`".to_owned());
    }
    (Kind::Websocket, "an impl block without `receive_json` or `handle` is a WebSocket consumer".to_owned())
}

fn mentions(ty: &Type, ident: &str) -> bool {
    fn walk(tokens: proc_macro2::TokenStream, ident: &str) -> bool {
        tokens.into_iter().any(|tree| match tree {
            proc_macro2::TokenTree::Ident(found) => found == ident,
            proc_macro2::TokenTree::Group(group) => walk(group.stream(), ident),
            _ => false,
        })
    }
    walk(quote::ToTokens::to_token_stream(ty), ident)
}

fn typed(arg: &FnArg) -> Option<&Type> {
    match arg {
        FnArg::Typed(pat) => Some(&pat.ty),
        FnArg::Receiver(_) => None,
    }
}

/// `async`, `&mut self`, and the right number of parameters.
fn check_signature(sig: &syn::Signature, arity: usize, shape: &str, errors: &mut Errors) {
    let name = &sig.ident;
    if sig.asyncness.is_none() {
        errors.on(sig.fn_token, format!("`{name}` must be an `async fn`: {shape}"));
    }
    match sig.receiver() {
        Some(receiver) if matches!(receiver.kind, syn::ReceiverKind::Reference(_, _, Some(_))) => {}
        Some(receiver) => errors.on(receiver, format!("`{name}` must take `&mut self`: {shape}")),
        None => errors.on(name, format!("`{name}` must take `&mut self`: {shape}")),
    }
    let params = sig.inputs.iter().filter(|arg| typed(arg).is_some()).count();
    if params != arity && sig.receiver().is_some() {
        let plural = if arity == 1 { "" } else { "s" };
        errors.on(&sig.inputs, format!("`{name}` takes {arity} parameter{plural} after `&mut self`: {shape}"));
    }
}

/// A decoded message is the method's own: `content: T`, not `content: &T` (a reference there
/// gives "missing lifetime in associated type").
fn check_by_value(ty: &Type, name: &str, errors: &mut Errors) {
    if let Type::Reference(reference) = ty {
        let inner = &reference.elem;
        errors.on(
            ty,
            format!(
                "the decoded message is passed by value (the method owns it): write `{name}: {}`",
                quote::ToTokens::to_token_stream(inner).to_string().replace(' ', "")
            ),
        );
    }
}

/// `fn groups(&self) -> impl IntoIterator<Item = impl Into<String>>`: plain, `&self`, no
/// parameters (it runs before `connect`, once per connection).
fn check_groups_signature(sig: &syn::Signature, errors: &mut Errors) {
    const SHAPE: &str = "`fn groups(&self) -> impl IntoIterator<Item = impl Into<String>>`";
    if let Some(asyncness) = &sig.asyncness {
        errors.on(asyncness, format!("`groups` is a plain (not async) fn: {SHAPE}"));
    }
    match sig.receiver() {
        Some(receiver) if matches!(receiver.kind, syn::ReceiverKind::Reference(_, _, None)) => {}
        Some(receiver) => errors.on(receiver, format!("`groups` takes `&self`: {SHAPE}")),
        None => errors.on(&sig.ident, format!("`groups` takes `&self`: {SHAPE}")),
    }
    if sig.inputs.iter().any(|arg| typed(arg).is_some()) {
        errors.on(&sig.inputs, format!("`groups` takes no parameters besides `&self`: {SHAPE}"));
    }
    if let ReturnType::Type(_, ty) = &sig.output
        && is_one_name(ty)
    {
        errors.on(
            ty,
            "`groups` returns every group's name, not one: for one group, return `[name]` (`-> [String; 1]`) or \
             `vec![name]` (`-> Vec<String>`)",
        );
    }
}

/// `fn since(&self, requested: Since) -> Since`, `fn presence(&self) -> Option<Track>`: plain,
/// `&self`, `params` parameters (they run before `connect`, once per connection).
fn check_plain_signature(sig: &syn::Signature, shape: &str, params: usize, errors: &mut Errors) {
    let name = &sig.ident;
    if let Some(asyncness) = &sig.asyncness {
        errors.on(asyncness, format!("`{name}` is a plain (not async) fn: {shape}"));
    }
    match sig.receiver() {
        Some(receiver) if matches!(receiver.kind, syn::ReceiverKind::Reference(_, _, None)) => {}
        Some(receiver) => errors.on(receiver, format!("`{name}` takes `&self`: {shape}")),
        None => errors.on(name, format!("`{name}` takes `&self`: {shape}")),
    }
    if sig.inputs.iter().filter(|arg| typed(arg).is_some()).count() != params {
        let count = if params == 0 { "no parameters" } else { "one parameter" };
        errors.on(&sig.inputs, format!("`{name}` takes {count} besides `&self`: {shape}"));
    }
}

/// `String`, `&str`, `Cow<str>`...: one name where a list of names is expected.
fn is_one_name(ty: &Type) -> bool {
    match ty {
        Type::Reference(reference) => is_one_name(&reference.elem),
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|last| matches!(last.ident.to_string().as_str(), "String" | "str" | "Cow")),
        _ => false,
    }
}

/// A spawned handler runs without the consumer: `async fn name(sender: WebsocketSender, event: T)`.
fn check_spawned_signature(sig: &syn::Signature, kind: &Kind, errors: &mut Errors) {
    let shape = format!("`async fn {}(sender: WebsocketSender, event: T)` with `T: Deserialize`", sig.ident);
    if !matches!(kind, Kind::Websocket | Kind::Json) {
        errors.on(&sig.ident, format!("`spawn` handlers are for WebSocket consumers, not {} ones", kind.describe()));
    }
    if sig.asyncness.is_none() {
        errors.on(sig.fn_token, format!("`{}` must be an `async fn`: {shape}", sig.ident));
    }
    if let Some(receiver) = sig.receiver() {
        errors.on(
            receiver,
            format!("a `spawn` handler runs as its own task, without the consumer: drop `self`: {shape}"),
        );
    } else if sig.inputs.len() != 2 {
        errors.on(&sig.inputs, format!("`{}` takes 2 parameters: {shape}", sig.ident));
    }
}

/// The parsed arguments of `#[handler("type")]` / `#[handler("type", spawn)]`.
struct HandlerArgs(LitStr, bool);

impl Parse for HandlerArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let message_type: LitStr = input.parse()?;
        if input.is_empty() {
            return Ok(HandlerArgs(message_type, false));
        }
        input.parse::<Token![,]>()?;
        input.parse::<kw::spawn>()?;
        input.parse::<Option<Token![,]>>()?;
        Ok(HandlerArgs(message_type, true))
    }
}

/// Removes `#[handler("type")]` from a method's attributes and returns the type, and whether
/// the handler is spawned.
fn take_handler_attr(attrs: &mut Vec<Attribute>, errors: &mut Errors) -> Option<(LitStr, bool)> {
    let mut found = None;
    attrs.retain(|attr| {
        if !attr.path().is_ident("handler") {
            return true;
        }
        match attr.parse_args::<HandlerArgs>().map(|HandlerArgs(lit, spawn)| (lit, spawn)) {
            Ok(_) if found.is_some() => errors.on(attr, "a method handles one message type; remove this `#[handler]`"),
            Ok(lit) => found = Some(lit),
            Err(_) => errors.on(
                attr,
                "write `#[handler(\"chat.message\")]` (or `#[handler(\"chat.message\", spawn)]`): the message \
                 `type` this method handles, as a string",
            ),
        }
        false
    });
    found
}

fn check_message_type(message_type: &LitStr, handlers: &[Handler], errors: &mut Errors) {
    let value = message_type.value();
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        errors.on(message_type, "a message type is a non-empty name without spaces, e.g. \"chat.message\"");
    } else if let Some(first) = handlers.iter().find(|handler| handler.message_type.value() == value) {
        errors.on(
            message_type,
            format!("`{value}` is already handled by `{}`; one handler per message type", first.method),
        );
    }
}

fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", ")
}
