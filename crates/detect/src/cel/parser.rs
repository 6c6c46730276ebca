//! Recursive-descent parser from tokens to a positioned syntax tree, following the
//! grammar and operator precedence of the CEL language definition:
//!
//! ```text
//! Expr           = ConditionalOr ["?" ConditionalOr ":" Expr]
//! ConditionalOr  = ConditionalAnd {"||" ConditionalAnd}
//! ConditionalAnd = Relation {"&&" Relation}
//! Relation       = Addition {("<" | "<=" | ">=" | ">" | "==" | "!=" | "in") Addition}
//! Addition       = Multiplication {("+" | "-") Multiplication}
//! Multiplication = Unary {("*" | "/" | "%") Unary}
//! Unary          = Member | "!" {"!"} Member | "-" {"-"} Member
//! Member         = Primary {"." IDENT ["(" [ExprList] ")"] | "[" Expr "]"}
//! Primary        = ["."] IDENT ["(" [ExprList] ")"] | "(" Expr ")"
//!                | "[" [ExprList] [","] "]" | "{" [MapInits] [","] "}" | LITERAL
//! ```

use super::lexer::{lex, SourceError, Tok, Token};

/// Deepest nesting of parentheses, brackets and operators the parser accepts.
pub(crate) const MAX_DEPTH: usize = 100;

/// A node of the syntax tree. `offset` is the byte offset of the token that best names the
/// node in an error message: the operator of a binary expression, the name of a call or field.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Expr {
    pub kind: ExprKind,
    pub offset: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::In => "in",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ExprKind {
    Null,
    Bool(bool),
    /// Magnitude of an integer literal; see [`Tok::Int`].
    Int(u64),
    Uint(u64),
    Double(f64),
    Str(String),
    /// A name; `root` when written with a leading dot (`.event`), which skips local variables.
    Ident {
        name: String,
        root: bool,
    },
    Select {
        operand: Box<Expr>,
        field: String,
    },
    Index {
        operand: Box<Expr>,
        index: Box<Expr>,
    },
    Call {
        target: Option<Box<Expr>>,
        name: String,
        args: Vec<Expr>,
    },
    List(Vec<Expr>),
    Map(Vec<(Expr, Expr)>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Cond {
        cond: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
}

/// Words CEL reserves; they may not name variables or functions.
const RESERVED: &[&str] = &[
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// Parses a whole expression.
pub(crate) fn parse(src: &str) -> Result<Expr, SourceError> {
    let tokens = lex(src)?;
    if tokens[0].tok == Tok::Eof {
        return Err(SourceError::new("the expression is empty", 0));
    }
    let mut parser = Parser {
        src,
        tokens,
        pos: 0,
        depth: 0,
    };
    let expr = parser.expr()?;
    let token = parser.peek();
    if token.tok != Tok::Eof {
        let message = if token.tok == Tok::RParen {
            "unmatched ')'".to_string()
        } else {
            format!(
                "expected an operator or the end of the expression, found {}",
                parser.describe(token)
            )
        };
        return Err(SourceError::new(message, token.start));
    }
    Ok(expr)
}

struct Parser<'s> {
    src: &'s str,
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl<'s> Parser<'s> {
    fn peek(&self) -> &Token {
        &self.tokens[self.pos]
    }

    fn peek_tok(&self) -> &Tok {
        &self.tokens[self.pos].tok
    }

    fn peek_second(&self) -> &Tok {
        let i = (self.pos + 1).min(self.tokens.len() - 1);
        &self.tokens[i].tok
    }

    fn bump(&mut self) -> Token {
        let token = self.tokens[self.pos].clone();
        if token.tok != Tok::Eof {
            self.pos += 1;
        }
        token
    }

    fn text(&self, token: &Token) -> &'s str {
        &self.src[token.start..token.end]
    }

    /// How a token reads in an error message: `end of input`, `identifier 'x'`, `'&&'`.
    fn describe(&self, token: &Token) -> String {
        let text = self.text(token);
        let short = |text: &str| -> String {
            if text.chars().count() > 24 {
                let cut: String = text.chars().take(21).collect();
                format!("{cut}...")
            } else {
                text.to_string()
            }
        };
        match token.tok {
            Tok::Eof => "end of input".to_string(),
            Tok::Ident => format!("identifier '{}'", short(text)),
            Tok::Int(_) | Tok::Uint(_) | Tok::Double(_) => format!("number {}", short(text)),
            Tok::Str(_) => format!("string {}", short(text)),
            _ => format!("'{text}'"),
        }
    }

    fn error_here(&self, expected: &str) -> SourceError {
        let token = self.peek();
        SourceError::new(
            format!("expected {expected}, found {}", self.describe(token)),
            token.start,
        )
    }

    /// "an expression after '&&'" — names the token before the missing expression.
    fn expected_expression(&self) -> SourceError {
        let what = match self.pos.checked_sub(1).map(|i| &self.tokens[i]) {
            Some(prev) => format!("an expression after '{}'", self.text(prev)),
            None => "an expression".to_string(),
        };
        self.error_here(&what)
    }

    fn column_of(&self, offset: usize) -> usize {
        let line_start = self.src[..offset].rfind('\n').map_or(0, |i| i + 1);
        self.src[line_start..offset].chars().count() + 1
    }

    fn enter(&mut self) -> Result<(), SourceError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(SourceError::new(
                format!("the expression is nested too deeply (more than {MAX_DEPTH} levels)"),
                self.peek().start,
            ));
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Expr, SourceError> {
        self.enter()?;
        let cond = self.or()?;
        let result = if *self.peek_tok() == Tok::Question {
            let q = self.bump();
            let then = self.or()?;
            if *self.peek_tok() != Tok::Colon {
                return Err(self.error_here(&format!(
                    "':' of the conditional started by '?' at column {}",
                    self.column_of(q.start)
                )));
            }
            self.bump();
            let otherwise = self.expr()?;
            Expr {
                kind: ExprKind::Cond {
                    cond: Box::new(cond),
                    then: Box::new(then),
                    otherwise: Box::new(otherwise),
                },
                offset: q.start,
            }
        } else {
            cond
        };
        self.depth -= 1;
        Ok(result)
    }

    fn or(&mut self) -> Result<Expr, SourceError> {
        let first = self.and()?;
        if *self.peek_tok() != Tok::OrOr {
            return Ok(first);
        }
        let offset = self.peek().start;
        let mut terms = vec![first];
        while *self.peek_tok() == Tok::OrOr {
            self.bump();
            terms.push(self.and()?);
        }
        Ok(Expr {
            kind: ExprKind::Or(terms),
            offset,
        })
    }

    fn and(&mut self) -> Result<Expr, SourceError> {
        let first = self.relation()?;
        if *self.peek_tok() != Tok::AndAnd {
            return Ok(first);
        }
        let offset = self.peek().start;
        let mut terms = vec![first];
        while *self.peek_tok() == Tok::AndAnd {
            self.bump();
            terms.push(self.relation()?);
        }
        Ok(Expr {
            kind: ExprKind::And(terms),
            offset,
        })
    }

    fn binary_level(
        &mut self,
        ops: fn(&Tok) -> Option<BinOp>,
        next: fn(&mut Self) -> Result<Expr, SourceError>,
    ) -> Result<Expr, SourceError> {
        let mut lhs = next(self)?;
        while let Some(op) = ops(self.peek_tok()) {
            let offset = self.bump().start;
            let rhs = next(self)?;
            lhs = Expr {
                kind: ExprKind::Binary {
                    op,
                    lhs: Box::new(lhs),
                    rhs: Box::new(rhs),
                },
                offset,
            };
        }
        Ok(lhs)
    }

    fn relation(&mut self) -> Result<Expr, SourceError> {
        self.binary_level(
            |t| match t {
                Tok::Lt => Some(BinOp::Lt),
                Tok::Le => Some(BinOp::Le),
                Tok::Gt => Some(BinOp::Gt),
                Tok::Ge => Some(BinOp::Ge),
                Tok::EqEq => Some(BinOp::Eq),
                Tok::Ne => Some(BinOp::Ne),
                Tok::In => Some(BinOp::In),
                _ => None,
            },
            Self::addition,
        )
    }

    fn addition(&mut self) -> Result<Expr, SourceError> {
        self.binary_level(
            |t| match t {
                Tok::Plus => Some(BinOp::Add),
                Tok::Minus => Some(BinOp::Sub),
                _ => None,
            },
            Self::multiplication,
        )
    }

    fn multiplication(&mut self) -> Result<Expr, SourceError> {
        self.binary_level(
            |t| match t {
                Tok::Star => Some(BinOp::Mul),
                Tok::Slash => Some(BinOp::Div),
                Tok::Percent => Some(BinOp::Rem),
                _ => None,
            },
            Self::unary,
        )
    }

    fn unary(&mut self) -> Result<Expr, SourceError> {
        let op = self.peek_tok().clone();
        if op != Tok::Not && op != Tok::Minus {
            return self.member();
        }
        let mut offsets = Vec::new();
        while *self.peek_tok() == op {
            offsets.push(self.bump().start);
        }
        let mut expr = self.member()?;
        for offset in offsets.into_iter().rev() {
            let operand = Box::new(expr);
            let kind = if op == Tok::Not {
                ExprKind::Not(operand)
            } else {
                ExprKind::Neg(operand)
            };
            expr = Expr { kind, offset };
        }
        Ok(expr)
    }

    fn member(&mut self) -> Result<Expr, SourceError> {
        let mut expr = self.primary()?;
        loop {
            match self.peek_tok() {
                Tok::Dot => {
                    self.bump();
                    let name_token = self.peek().clone();
                    let is_name = matches!(
                        name_token.tok,
                        Tok::Ident | Tok::True | Tok::False | Tok::Null | Tok::In
                    );
                    if !is_name {
                        return Err(self.error_here("a field or method name after '.'"));
                    }
                    self.bump();
                    let name = self.text(&name_token).to_string();
                    if *self.peek_tok() == Tok::LParen {
                        let args = self.arguments(&name)?;
                        expr = Expr {
                            kind: ExprKind::Call {
                                target: Some(Box::new(expr)),
                                name,
                                args,
                            },
                            offset: name_token.start,
                        };
                    } else {
                        expr = Expr {
                            kind: ExprKind::Select {
                                operand: Box::new(expr),
                                field: name,
                            },
                            offset: name_token.start,
                        };
                    }
                }
                Tok::LBracket => {
                    let open = self.bump();
                    let index = self.expr()?;
                    if *self.peek_tok() != Tok::RBracket {
                        return Err(self.error_here(&format!(
                            "']' to close the '[' at column {}",
                            self.column_of(open.start)
                        )));
                    }
                    self.bump();
                    expr = Expr {
                        kind: ExprKind::Index {
                            operand: Box::new(expr),
                            index: Box::new(index),
                        },
                        offset: open.start,
                    };
                }
                _ => return Ok(expr),
            }
        }
    }

    /// `( [expr {, expr}] )` after a function name; the '(' is the current token.
    fn arguments(&mut self, name: &str) -> Result<Vec<Expr>, SourceError> {
        self.bump();
        let mut args = Vec::new();
        if *self.peek_tok() == Tok::RParen {
            self.bump();
            return Ok(args);
        }
        loop {
            args.push(self.expr()?);
            match self.peek_tok() {
                Tok::Comma => {
                    self.bump();
                }
                Tok::RParen => {
                    self.bump();
                    return Ok(args);
                }
                _ => {
                    return Err(self.error_here(&format!("',' or ')' in the arguments of {name}()")))
                }
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, SourceError> {
        let token = self.peek().clone();
        let offset = token.start;
        let literal = |kind| Ok(Expr { kind, offset });
        match &token.tok {
            Tok::Int(v) => {
                self.bump();
                literal(ExprKind::Int(*v))
            }
            Tok::Uint(v) => {
                self.bump();
                literal(ExprKind::Uint(*v))
            }
            Tok::Double(v) => {
                self.bump();
                literal(ExprKind::Double(*v))
            }
            Tok::Str(s) => {
                self.bump();
                literal(ExprKind::Str(s.clone()))
            }
            Tok::True => {
                self.bump();
                literal(ExprKind::Bool(true))
            }
            Tok::False => {
                self.bump();
                literal(ExprKind::Bool(false))
            }
            Tok::Null => {
                self.bump();
                literal(ExprKind::Null)
            }
            Tok::Dot if *self.peek_second() == Tok::Ident => {
                self.bump();
                self.identifier(true)
            }
            Tok::Ident => self.identifier(false),
            Tok::LParen => {
                self.bump();
                let inner = self.expr()?;
                if *self.peek_tok() != Tok::RParen {
                    return Err(self.error_here(&format!(
                        "')' to close the '(' at column {}",
                        self.column_of(offset)
                    )));
                }
                self.bump();
                Ok(inner)
            }
            Tok::LBracket => {
                self.bump();
                let mut items = Vec::new();
                loop {
                    if *self.peek_tok() == Tok::RBracket {
                        self.bump();
                        break;
                    }
                    items.push(self.expr()?);
                    match self.peek_tok() {
                        Tok::Comma => {
                            self.bump();
                        }
                        Tok::RBracket => {
                            self.bump();
                            break;
                        }
                        _ => return Err(self.error_here("',' or ']' in a list")),
                    }
                }
                literal(ExprKind::List(items))
            }
            Tok::LBrace => {
                self.bump();
                let mut entries = Vec::new();
                loop {
                    if *self.peek_tok() == Tok::RBrace {
                        self.bump();
                        break;
                    }
                    let key = self.expr()?;
                    if *self.peek_tok() != Tok::Colon {
                        return Err(self.error_here("':' after a map key"));
                    }
                    self.bump();
                    let value = self.expr()?;
                    entries.push((key, value));
                    match self.peek_tok() {
                        Tok::Comma => {
                            self.bump();
                        }
                        Tok::RBrace => {
                            self.bump();
                            break;
                        }
                        _ => return Err(self.error_here("',' or '}' in a map")),
                    }
                }
                literal(ExprKind::Map(entries))
            }
            _ => Err(self.expected_expression()),
        }
    }

    /// An identifier in primary position: a variable or a global call.
    fn identifier(&mut self, root: bool) -> Result<Expr, SourceError> {
        let token = self.bump();
        let name = self.text(&token).to_string();
        if RESERVED.contains(&name.as_str()) {
            return Err(SourceError::new(
                format!("'{name}' is a reserved word and cannot be used as a name"),
                token.start,
            ));
        }
        match self.peek_tok() {
            Tok::LParen => {
                let args = self.arguments(&name)?;
                Ok(Expr {
                    kind: ExprKind::Call {
                        target: None,
                        name,
                        args,
                    },
                    offset: token.start,
                })
            }
            Tok::LBrace => Err(SourceError::new(
                format!("message construction '{name}{{...}}' is not supported"),
                token.start,
            )),
            _ => Ok(Expr {
                kind: ExprKind::Ident { name, root },
                offset: token.start,
            }),
        }
    }
}
