//! [`Form`]: the fields of an HTML form post (Django's `request.POST`).

use http::header::CONTENT_TYPE;

use crate::scope::{Scope, percent_decode};

/// At most this many fields are parsed (Django's `DATA_UPLOAD_MAX_NUMBER_FIELDS`): a body of
/// `a&a&a...` would otherwise cost far more memory as fields than as bytes.
pub const MAX_FIELDS: usize = 1000;

/// The fields of an HTML form post (`application/x-www-form-urlencoded`), as Django's
/// `request.POST`: in order, a name may repeat (checkboxes), values percent-decoded with `+` as
/// a space (invalid UTF-8 replaced, as Django does).
///
/// ```
/// use channels::consumer::{ConsumerError, Form, HttpResponse};
/// use channels::prelude::*;
///
/// // Inside an HTTP consumer's `handle(&mut self, body: Bytes, response: &mut HttpResponse)`:
/// async fn handle(scope: &Scope, body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
///     let form = Form::parse(scope, &body)?;
///     let choice = form.get("choice").unwrap_or("none");
///     response.text(StatusCode::OK, format!("you chose {choice}")).await?;
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    fields: Vec<(String, String)>,
}

/// Why a request body is not a form this crate reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormError {
    /// The request's `Content-Type` is not `application/x-www-form-urlencoded` (a
    /// `multipart/form-data` upload, JSON, or none).
    #[error("the request body is not a form (Content-Type {0:?}; expected application/x-www-form-urlencoded)")]
    NotAForm(String),
    /// More than [`MAX_FIELDS`] fields.
    #[error("the form has more than {MAX_FIELDS} fields")]
    TooManyFields,
}

impl Form {
    /// The form in `body`, when the request's `Content-Type` says it is one.
    ///
    /// # Errors
    /// [`FormError::NotAForm`] for another content type, [`FormError::TooManyFields`].
    pub fn parse(scope: &Scope, body: &[u8]) -> Result<Form, FormError> {
        let content_type = scope.header(CONTENT_TYPE.as_str()).unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(FormError::NotAForm(content_type.to_owned()));
        }
        Form::from_urlencoded(body)
    }

    /// The form encoded in `body` (`a=1&b=two+words`), whatever the request said it was.
    ///
    /// # Errors
    /// [`FormError::TooManyFields`].
    pub fn from_urlencoded(body: &[u8]) -> Result<Form, FormError> {
        let mut fields = Vec::new();
        for pair in body.split(|byte| *byte == b'&').filter(|pair| !pair.is_empty()) {
            if fields.len() == MAX_FIELDS {
                return Err(FormError::TooManyFields);
            }
            let pair = String::from_utf8_lossy(pair);
            let (name, value) = pair.split_once('=').unwrap_or((&pair, ""));
            fields.push((percent_decode(&name.replace('+', " ")), percent_decode(&value.replace('+', " "))));
        }
        Ok(Form { fields })
    }

    /// The last value of `name` (as Django's `request.POST[name]`), if the form has it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().rev().find(|(field, _)| field == name).map(|(_, value)| value.as_str())
    }

    /// Every value of `name`, in order (Django's `getlist`: checkboxes, multiple selects).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields.iter().filter(move |(field, _)| field == name).map(|(_, value)| value.as_str())
    }

    /// Every field, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True when the form has no field.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Protocol;

    fn scope(content_type: &str) -> Scope {
        let mut scope = Scope::new(Protocol::Http, "/vote/");
        scope.headers.insert(CONTENT_TYPE, content_type.parse().unwrap());
        scope
    }

    #[test]
    fn fields_are_decoded_in_order_and_names_repeat() {
        let form =
            Form::parse(&scope("application/x-www-form-urlencoded; charset=UTF-8"), b"a=1&b=two+words&a=%C3%A9&c&=x&&")
                .unwrap();
        assert_eq!(form.get("a"), Some("é"), "the last value, as Django");
        assert_eq!(form.get_all("a").collect::<Vec<_>>(), ["1", "é"]);
        assert_eq!(form.get("b"), Some("two words"));
        assert_eq!(form.get("c"), Some(""));
        assert_eq!(form.get("missing"), None);
        assert_eq!(form.len(), 5);
    }

    #[test]
    fn other_bodies_and_floods_are_refused() {
        assert_eq!(Form::parse(&scope("application/json"), b"{}"), Err(FormError::NotAForm("application/json".into())));
        let none = Form::parse(&Scope::new(Protocol::Http, "/"), b"a=1");
        assert_eq!(none, Err(FormError::NotAForm(String::new())));
        let flood = "a&".repeat(MAX_FIELDS + 1);
        assert_eq!(Form::from_urlencoded(flood.as_bytes()), Err(FormError::TooManyFields));
        assert_eq!(Form::from_urlencoded("a&".repeat(MAX_FIELDS).as_bytes()).map(|form| form.len()), Ok(MAX_FIELDS));
        assert_eq!(Form::from_urlencoded(b"bad=\xff%ff").unwrap().get("bad"), Some("\u{fffd}\u{fffd}"));
    }
}
