//! A one-line text field: every screen edits text the same way (cursor keys, Backspace, Delete,
//! Home/End, Ctrl-U), so the editing logic lives once here.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TextInput {
    pub text: String,
    /// Cursor position in characters.
    pub cursor: usize,
}

/// What a key did to a field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    /// The text or cursor changed (or the key was ignored); keep editing.
    Changed,
    Submit,
    Cancel,
}

impl TextInput {
    pub fn new(text: impl Into<String>) -> Self {
        let text = text.into();
        let cursor = text.chars().count();
        Self { text, cursor }
    }

    fn byte(&self, chars: usize) -> usize {
        self.text.char_indices().nth(chars).map(|(i, _)| i).unwrap_or(self.text.len())
    }

    pub fn key(&mut self, key: &KeyEvent) -> Edit {
        let len = self.text.chars().count();
        match key.code {
            KeyCode::Enter => return Edit::Submit,
            KeyCode::Esc => return Edit::Cancel,
            KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                self.text.clear();
                self.cursor = 0;
            }
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
                let at = self.byte(self.cursor);
                self.text.insert(at, c);
                self.cursor += 1;
            }
            KeyCode::Backspace if self.cursor > 0 => {
                let at = self.byte(self.cursor - 1);
                self.text.remove(at);
                self.cursor -= 1;
            }
            KeyCode::Delete if self.cursor < len => {
                let at = self.byte(self.cursor);
                self.text.remove(at);
            }
            KeyCode::Left => self.cursor = self.cursor.saturating_sub(1),
            KeyCode::Right => self.cursor = (self.cursor + 1).min(len),
            KeyCode::Home => self.cursor = 0,
            KeyCode::End => self.cursor = len,
            _ => {}
        }
        Edit::Changed
    }

    /// The text with a block cursor, for display.
    pub fn with_cursor(&self) -> String {
        let at = self.byte(self.cursor);
        format!("{}▏{}", &self.text[..at], &self.text[at..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn edits_in_the_middle_with_unicode() {
        let mut t = TextInput::new("aé");
        t.key(&k(KeyCode::Left));
        t.key(&k(KeyCode::Char('x')));
        assert_eq!(t.text, "axé");
        t.key(&k(KeyCode::Backspace));
        t.key(&k(KeyCode::Delete));
        assert_eq!(t.text, "a");
        assert_eq!(t.key(&k(KeyCode::Enter)), Edit::Submit);
        assert_eq!(t.with_cursor(), "a▏");
    }
}
