//! A request's parameters: the query string and a form body, merged (the
//! body wins on a repeated name). Arrays come as `Name.1`, `Name.2`, ….

use std::collections::BTreeMap;

use super::error::ApiError;

/// Most entries an array parameter may have, whatever an action allows.
const ARRAY_ENTRIES_MAX: usize = 1000;

/// Name → value, sorted by name (the order both signatures use).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// Parameters of a query string and, if any, a form body.
    pub fn parse(query: &str, form: Option<&[u8]>) -> Params {
        let mut map = BTreeMap::new();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            map.insert(k.into_owned(), v.into_owned());
        }
        if let Some(body) = form {
            for (k, v) in form_urlencoded::parse(body) {
                map.insert(k.into_owned(), v.into_owned());
            }
        }
        Params(map)
    }

    /// Every parameter, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The value of `name`, which must be present and not empty.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        match self.get(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(ApiError::missing(name)),
        }
    }

    /// An optional integer.
    pub fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::invalid(name, "not an integer")),
        }
    }

    /// A mandatory integer.
    pub fn required_int(&self, name: &str) -> Result<i64, ApiError> {
        self.int(name)?.ok_or_else(|| ApiError::missing(name))
    }

    /// An optional boolean (`true` / `false`, any case).
    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None | Some("") => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(_) => Err(ApiError::invalid(name, "not true or false")),
        }
    }

    /// The array `name`: `name.1`, `name.2`, … in index order (gaps end
    /// it); a JSON array or plain `name` is accepted too.
    pub fn list(&self, name: &str) -> Result<Vec<String>, ApiError> {
        let mut out = Vec::new();
        for i in 1..=ARRAY_ENTRIES_MAX + 1 {
            match self.get(&format!("{name}.{i}")) {
                Some(v) if i <= ARRAY_ENTRIES_MAX => out.push(v.to_owned()),
                Some(_) => return Err(ApiError::invalid(name, "too many entries")),
                None => break,
            }
        }
        if !out.is_empty() {
            return Ok(out);
        }
        match self.get(name) {
            None | Some("") => Ok(out),
            Some(v) if v.starts_with('[') => serde_json::from_str::<Vec<String>>(v)
                .map_err(|_| ApiError::invalid(name, "not a JSON array of strings")),
            Some(v) => Ok(vec![v.to_owned()]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_form_merge_and_arrays_read_in_order() {
        let p = Params::parse(
            "Action=BatchQuerySessionByClientIds&ClientIdList.2=b&ClientIdList.1=a",
            Some(b"InstanceId=i%2D1&ClientIdList.3=c+d"),
        );
        assert_eq!(p.get("InstanceId"), Some("i-1"));
        let list = p.list("ClientIdList").expect("array");
        assert_eq!(list, ["a", "b", "c d"]);
        assert_eq!(p.required("Missing"), Err(ApiError::missing("Missing")));
    }

    #[test]
    fn integers_and_booleans_are_checked() {
        let p = Params::parse("PageSize=ten&Reverse=true&CurrentPage=2", None);
        assert_eq!(
            p.int("PageSize").map_err(|e| e.code),
            Err("InvalidParameter".into())
        );
        assert_eq!(p.bool("Reverse"), Ok(Some(true)));
        assert_eq!(p.int("CurrentPage"), Ok(Some(2)));
        assert_eq!(p.int("Absent"), Ok(None));
    }
}
