//! Finds the line of a node in a YAML file by its path (`routes[2].upstream`), so errors found
//! after deserialization (a route naming an undefined upstream) still point at a line.
//! serde_yaml gives positions only for its own errors; `marked-yaml` keeps a span on every node.

use marked_yaml::Node;

/// One step of a path into a YAML document.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// A parsed document that can answer "which line is this path on".
#[derive(Debug)]
pub(crate) struct Locator {
    root: Option<Node>,
}

impl Locator {
    pub(crate) fn new(text: &str) -> Self {
        Self {
            root: marked_yaml::parse_yaml(0, text).ok(),
        }
    }

    /// Line and column (1-based) of the deepest node of `path` that exists: a key's own position
    /// for mapping entries, the element's position for sequence items.
    pub(crate) fn find(&self, path: &[Step<'_>]) -> Option<(usize, usize)> {
        let mut node = self.root.as_ref()?;
        let mut found = node.span().start().map(|m| (m.line(), m.column()));
        for step in path {
            match (step, node) {
                (Step::Key(key), Node::Mapping(map)) => {
                    let Some((k, v)) = map.iter().find(|(k, _)| k.as_str() == *key) else {
                        break;
                    };
                    found = k.span().start().map(|m| (m.line(), m.column())).or(found);
                    node = v;
                }
                (Step::Index(i), Node::Sequence(seq)) => {
                    let Some(v) = seq.get(*i) else { break };
                    found = v.span().start().map(|m| (m.line(), m.column())).or(found);
                    node = v;
                }
                _ => break,
            }
        }
        found
    }
}
