//! The regorus side of the comparison, shared by the benchmark, the equivalence test and
//! the `regorus_eval` example (each includes this file with `#[path]`).
//!
//! Two ways regorus runs a policy, both prepared once and reused for every review, as a
//! webhook would: the tree-walking interpreter (`Engine`: `set_input` + `eval_rule`) and
//! the RVM bytecode VM (`RegoVM`: `set_input` + `execute`). Each review's JSON text is
//! parsed into a regorus `Value` every time: parse included, as for our engine.
#![allow(dead_code)]

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::vm::RegoVM;
use regorus::{Engine, Rc, Value};

/// Errors from regorus (anyhow) or from reading files.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The rule whose value is the set of denials.
pub const QUERY: &str = "data.portcullis.bench.deny";

/// The three-check subset in Rego.
pub const THREE_CHECKS_REGO: &str = include_str!("../data/three-checks.rego");

/// The regorus interpreter with the policy loaded and prepared.
pub struct Interpreter {
    engine: Engine,
}

impl Interpreter {
    /// Loads `rego` and evaluates once on an empty review, so that the one-time analysis
    /// of the modules is not counted against the first review.
    pub fn new(rego: &str) -> Result<Interpreter, BoxError> {
        let mut engine = Engine::new();
        engine.add_policy("three-checks.rego".to_owned(), rego.to_owned())?;
        let mut me = Interpreter { engine };
        me.deny(r#"{"request":{"operation":"CREATE","kind":{"group":"","kind":"Pod"},"object":{"spec":{}}}}"#)?;
        Ok(me)
    }

    /// Parses `json` and evaluates the denials.
    pub fn deny(&mut self, json: &str) -> Result<Value, BoxError> {
        self.engine.set_input(Value::from_json_str(json)?);
        Ok(self.engine.eval_rule(QUERY.to_owned())?)
    }
}

/// The regorus RVM with the policy compiled to bytecode and loaded.
pub struct Vm {
    vm: RegoVM,
}

impl Vm {
    /// Compiles `rego` for the RVM.
    pub fn new(rego: &str) -> Result<Vm, BoxError> {
        let mut engine = Engine::new();
        engine.add_policy("three-checks.rego".to_owned(), rego.to_owned())?;
        let compiled = engine.compile_with_entrypoint(&Rc::from(QUERY))?;
        let program = Compiler::compile_from_policy(&compiled, &[QUERY])?;
        let mut vm = RegoVM::new();
        vm.load_program(program);
        Ok(Vm { vm })
    }

    /// Parses `json` and evaluates the denials.
    pub fn deny(&mut self, json: &str) -> Result<Value, BoxError> {
        self.vm.set_input(Value::from_json_str(json)?);
        Ok(self.vm.execute()?)
    }
}

/// Whether a `deny` result blocks: a non-empty set. Anything but a set is an error, so a
/// policy that fails to evaluate never reads as "allow".
pub fn blocks(deny: &Value) -> Result<bool, BoxError> {
    Ok(!deny.as_set()?.is_empty())
}
