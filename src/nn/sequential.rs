//! `Sequential`: modules applied in order, named `0`, `1`, ... or by a given name.

use crate::base::Result;
use crate::nn::module::Module;
use crate::tensor::Tensor;

/// Modules applied one after another. Children added with [`Self::add`] are named by
/// their position (`0`, `1`, ...), as in `nn.Sequential(...)`; [`Self::add_named`] gives
/// a name, which nests a model under an attribute name as a PyTorch `nn.Module` subclass
/// does (`linear_relu_stack.0.weight`).
pub struct Sequential {
    layers: Vec<(String, Box<dyn Module>)>,
    training: bool,
}

impl Default for Sequential {
    fn default() -> Self {
        Sequential::new()
    }
}

impl Sequential {
    /// An empty sequence (training mode).
    pub fn new() -> Sequential {
        Sequential {
            layers: Vec::new(),
            training: true,
        }
    }

    /// Appends a module named by its position (a builder, like `nn.Sequential(...)`).
    #[allow(clippy::should_implement_trait)] // a builder step, not `+`
    pub fn add(self, m: impl Module + 'static) -> Sequential {
        let name = self.layers.len().to_string();
        self.add_named(&name, m)
    }

    /// Appends a module under `name`.
    pub fn add_named(mut self, name: &str, m: impl Module + 'static) -> Sequential {
        self.push_named(name, Box::new(m));
        self
    }

    /// Appends a boxed module named by its position.
    pub fn push(&mut self, m: Box<dyn Module>) {
        let name = self.layers.len().to_string();
        self.push_named(&name, m);
    }

    /// Appends a boxed module under `name`.
    pub fn push_named(&mut self, name: &str, m: Box<dyn Module>) {
        self.layers.push((name.to_string(), m));
    }

    /// Number of children.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are no children.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The child at `i`.
    pub fn get(&self, i: usize) -> Option<&dyn Module> {
        self.layers.get(i).map(|(_, m)| m.as_ref())
    }
}

impl Module for Sequential {
    /// Each child in order; a child followed by a ReLU runs both through its
    /// [`Module::forward_relu`] (a `Linear` then fuses them into one op).
    fn forward(&self, input: &Tensor) -> Result<Tensor> {
        let mut x = input.clone();
        let mut i = 0;
        while let Some((_, m)) = self.layers.get(i) {
            if self
                .layers
                .get(i + 1)
                .is_some_and(|(_, next)| next.is_relu())
            {
                x = m.forward_relu(&x)?;
                i += 2;
            } else {
                x = m.forward(&x)?;
                i += 1;
            }
        }
        Ok(x)
    }

    fn children(&self) -> Vec<(String, &dyn Module)> {
        self.layers
            .iter()
            .map(|(n, m)| (n.clone(), m.as_ref()))
            .collect()
    }

    fn children_mut(&mut self) -> Vec<(String, &mut dyn Module)> {
        self.layers
            .iter_mut()
            .map(|(n, m)| (n.clone(), m.as_mut() as &mut dyn Module))
            .collect()
    }

    fn is_training(&self) -> bool {
        self.training
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
}
