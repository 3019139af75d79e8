//! The access log's filter: the subset of the Telemetry API's CEL expressions it accepts.

use super::Outcome;

/// Which requests are logged: a subset of the CEL expressions of the Telemetry API's
/// `accessLogging.filter.expression`.
///
/// Accepted: comparisons of `response.code` or `response.grpc_status` with an integer
/// (`==`, `!=`, `<`, `<=`, `>`, `>=`), combined with `&&` and `||` (`&&` binds tighter) and
/// grouped with parentheses. `response.grpc_status` of a response that has none (plain HTTP)
/// makes its comparison false, as an absent attribute fails a CEL expression in Envoy. Anything
/// else is rejected with a [`FilterError`] naming where, rather than logging everything or
/// nothing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Filter {
    expr: Expr,
}

/// Why a filter expression was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unsupported access log filter `{expression}` at byte {position}: {reason}")]
pub struct FilterError {
    expression: Box<str>,
    pub(super) position: usize,
    reason: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Expr {
    Compare(Attribute, Op, i64),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Attribute {
    Code,
    GrpcStatus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

// === impl Filter ===

impl Filter {
    /// Failed requests only: `response.code >= 400 || response.grpc_status != 0` (an HTTP
    /// error status, or a gRPC call that did not end `OK`).
    pub fn errors_only() -> Self {
        let errors_only = Expr::Or(
            Box::new(Expr::Compare(Attribute::Code, Op::Ge, 400)),
            Box::new(Expr::Compare(Attribute::GrpcStatus, Op::Ne, 0)),
        );
        Self { expr: errors_only }
    }

    /// Parses an expression of the supported subset (see [`Filter`]).
    pub fn parse(expression: &str) -> Result<Self, FilterError> {
        let mut parser = Parser {
            text: expression,
            at: 0,
        };
        let expr = parser.or()?;
        parser.skip_space();
        if parser.at != expression.len() {
            return Err(parser.error("expected `&&`, `||` or the end"));
        }
        Ok(Self { expr })
    }

    pub(super) fn accepts(&self, outcome: &Outcome) -> bool {
        self.expr.eval(outcome)
    }
}

impl std::str::FromStr for Filter {
    type Err = FilterError;

    fn from_str(s: &str) -> Result<Self, FilterError> {
        Self::parse(s)
    }
}

// === impl Expr ===

impl Expr {
    fn eval(&self, outcome: &Outcome) -> bool {
        match self {
            Self::And(a, b) => a.eval(outcome) && b.eval(outcome),
            Self::Or(a, b) => a.eval(outcome) || b.eval(outcome),
            Self::Compare(attribute, op, value) => {
                let actual = match attribute {
                    Attribute::Code => i64::from(outcome.code),
                    Attribute::GrpcStatus => match outcome.grpc_status {
                        Some(status) => i64::from(status.as_i32()),
                        None => return false,
                    },
                };
                match op {
                    Op::Eq => actual == *value,
                    Op::Ne => actual != *value,
                    Op::Lt => actual < *value,
                    Op::Le => actual <= *value,
                    Op::Gt => actual > *value,
                    Op::Ge => actual >= *value,
                }
            }
        }
    }
}

/// A recursive-descent parser over the expression's bytes; nesting is bounded by the
/// expression's length, which a configuration keeps short.
struct Parser<'a> {
    text: &'a str,
    at: usize,
}

/// Deeper parentheses than this are refused rather than risk the stack.
const MAX_NESTING: usize = 32;

impl Parser<'_> {
    fn error(&self, reason: &'static str) -> FilterError {
        FilterError {
            expression: self.text.into(),
            position: self.at,
            reason,
        }
    }

    fn rest(&self) -> &str {
        &self.text[self.at..]
    }

    fn skip_space(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        if self.rest().starts_with(token) {
            self.at += token.len();
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        self.or_nested(0)
    }

    fn or_nested(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let mut left = self.and(depth)?;
        while self.eat("||") {
            left = Expr::Or(Box::new(left), Box::new(self.and(depth)?));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let mut left = self.term(depth)?;
        while self.eat("&&") {
            left = Expr::And(Box::new(left), Box::new(self.term(depth)?));
        }
        Ok(left)
    }

    fn term(&mut self, depth: usize) -> Result<Expr, FilterError> {
        if self.eat("(") {
            if depth >= MAX_NESTING {
                return Err(self.error("too many nested parentheses"));
            }
            let inner = self.or_nested(depth + 1)?;
            if !self.eat(")") {
                return Err(self.error("expected `)`"));
            }
            return Ok(inner);
        }
        let attribute = if self.eat("response.grpc_status") {
            Attribute::GrpcStatus
        } else if self.eat("response.code") {
            Attribute::Code
        } else {
            return Err(self.error("expected `response.code` or `response.grpc_status`"));
        };
        let op = [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("<", Op::Lt),
            (">", Op::Gt),
        ]
        .into_iter()
        .find(|(token, _)| self.eat(token))
        .map(|(_, op)| op)
        .ok_or_else(|| self.error("expected a comparison (`==`, `!=`, `<`, `<=`, `>`, `>=`)"))?;
        self.skip_space();
        let digits = self
            .rest()
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'-')
            .count();
        let value = self.rest()[..digits]
            .parse::<i64>()
            .map_err(|_| self.error("expected an integer"))?;
        self.at += digits;
        Ok(Expr::Compare(attribute, op, value))
    }
}
