//! Terraform invariants of `shared/spec/operations.md`, asserted from the
//! parsed HCL (hcl-rs), without AWS access or a terraform binary.
//!
//! Every `.tf` file under `terraform/` is parsed. Numbers may live in the
//! resource itself or in a module variable's default; an environment root may
//! pass its own value (from `terraform.tfvars`). [`Stack::eval`] resolves
//! `var.*` and `local.*` the way terraform would for one environment, so every
//! assertion checks the value dev1 and prod1 actually deploy, and fails if the
//! number in the HCL changes. Also checked here: the values shared with the
//! cloud-config and the systemd units (drain 540 s < stop 600 s = ELB 600 s).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use hcl::expr::{ObjectKey, Operation, TraversalOperator, UnaryOperator};
use hcl::{Block, Body, Expression};

const ENVIRONMENTS: [&str; 2] = ["dev1", "prod1"];
const GROUP_METRICS: [&str; 8] = [
    "GroupMinSize",
    "GroupMaxSize",
    "GroupDesiredCapacity",
    "GroupInServiceInstances",
    "GroupPendingInstances",
    "GroupStandbyInstances",
    "GroupTerminatingInstances",
    "GroupTotalInstances",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tf_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            if name != ".terraform" {
                tf_files(&path, out);
            }
        } else if name.ends_with(".tf") {
            out.push(path);
        }
    }
}

fn parse_file(path: &Path) -> Body {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    hcl::parse(&text).unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
}

/// All top-level blocks of the `.tf` files of one directory.
fn dir_blocks(dir: &Path) -> Vec<Block> {
    let mut files = Vec::new();
    tf_files(dir, &mut files);
    files.retain(|f| f.parent() == Some(dir));
    assert!(!files.is_empty(), "no .tf files in {}", dir.display());
    files
        .iter()
        .flat_map(|f| parse_file(f).into_blocks().collect::<Vec<_>>())
        .collect()
}

fn labels(block: &Block) -> Vec<&str> {
    block.labels().iter().map(|l| l.as_str()).collect()
}

fn attr<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
    body.attributes().find(|a| a.key() == key).map(|a| a.expr())
}

fn must_attr<'a>(block: &'a Block, key: &str) -> &'a Expression {
    attr(block.body(), key).unwrap_or_else(|| {
        panic!(
            "{} {:?} has no attribute {key}",
            block.identifier(),
            labels(block)
        )
    })
}

fn sub_blocks<'a>(block: &'a Block, ident: &str) -> Vec<&'a Block> {
    block
        .body()
        .blocks()
        .filter(|b| b.identifier() == ident)
        .collect()
}

fn one_block<'a>(block: &'a Block, ident: &str) -> &'a Block {
    let found = sub_blocks(block, ident);
    assert_eq!(
        found.len(),
        1,
        "{:?}: expected one {ident} block",
        labels(block)
    );
    found[0]
}

/// `a.b.c` of a traversal expression (root variable plus attribute names).
fn path_of(expr: &Expression) -> Option<Vec<String>> {
    match expr {
        Expression::Variable(v) => Some(vec![v.as_str().to_string()]),
        Expression::Traversal(t) => {
            let mut path = path_of(&t.expr)?;
            for op in &t.operators {
                match op {
                    TraversalOperator::GetAttr(name) => path.push(name.as_str().to_string()),
                    TraversalOperator::Index(Expression::Number(n)) => path.push(format!("[{n}]")),
                    _ => return None,
                }
            }
            Some(path)
        }
        Expression::Parenthesis(inner) => path_of(inner),
        _ => None,
    }
}

fn path_str(expr: &Expression) -> String {
    path_of(expr)
        .map(|p| p.join("."))
        .unwrap_or_else(|| format!("{expr:?}"))
}

/// Calls `f` on `expr` and every expression nested in it.
fn walk(expr: &Expression, f: &mut dyn FnMut(&Expression)) {
    f(expr);
    match expr {
        Expression::Array(items) => items.iter().for_each(|e| walk(e, f)),
        Expression::Object(obj) => {
            for (k, v) in obj {
                if let ObjectKey::Expression(k) = k {
                    walk(k, f);
                }
                walk(v, f);
            }
        }
        Expression::Traversal(t) => {
            walk(&t.expr, f);
            for op in &t.operators {
                if let TraversalOperator::Index(i) = op {
                    walk(i, f);
                }
            }
        }
        Expression::FuncCall(c) => c.args.iter().for_each(|e| walk(e, f)),
        Expression::Parenthesis(e) => walk(e, f),
        Expression::Conditional(c) => {
            walk(&c.cond_expr, f);
            walk(&c.true_expr, f);
            walk(&c.false_expr, f);
        }
        Expression::Operation(op) => match op.as_ref() {
            Operation::Unary(u) => walk(&u.expr, f),
            Operation::Binary(b) => {
                walk(&b.lhs_expr, f);
                walk(&b.rhs_expr, f);
            }
        },
        Expression::ForExpr(fe) => {
            walk(&fe.collection_expr, f);
            if let Some(k) = &fe.key_expr {
                walk(k, f);
            }
            walk(&fe.value_expr, f);
            if let Some(c) = &fe.cond_expr {
                walk(c, f);
            }
        }
        _ => {}
    }
}

/// Calls `f` on every expression of a body, nested blocks included.
fn walk_body(body: &Body, f: &mut dyn FnMut(&Expression)) {
    for a in body.attributes() {
        walk(a.expr(), f);
    }
    for b in body.blocks() {
        walk_body(b.body(), f);
    }
}

/// The module plus, optionally, one environment root calling it.
struct Stack {
    module: Vec<Block>,
    /// Attributes of the environment's `module "vf_export"` block.
    call: BTreeMap<String, Expression>,
    /// The environment's variables: terraform.tfvars over declared defaults.
    env_vars: BTreeMap<String, Expression>,
    env: Option<&'static str>,
}

impl Stack {
    fn module_only() -> Stack {
        Stack {
            module: dir_blocks(&repo().join("terraform/modules/vf-export")),
            call: BTreeMap::new(),
            env_vars: BTreeMap::new(),
            env: None,
        }
    }

    fn for_env(env: &'static str) -> Stack {
        let dir = repo().join("terraform/environments").join(env);
        let blocks = dir_blocks(&dir);
        let calls: Vec<&Block> = blocks
            .iter()
            .filter(|b| b.identifier() == "module")
            .collect();
        assert_eq!(calls.len(), 1, "{env}: expected one module call");
        let call_block = calls[0];
        let source = must_attr(call_block, "source");
        assert_eq!(
            source,
            &Expression::String("../../modules/vf-export".into()),
            "{env}: the root must call the local module"
        );
        let call = call_block
            .body()
            .attributes()
            .map(|a| (a.key().to_string(), a.expr().clone()))
            .collect();
        let mut env_vars = BTreeMap::new();
        for b in blocks.iter().filter(|b| b.identifier() == "variable") {
            if let Some(d) = attr(b.body(), "default") {
                env_vars.insert(labels(b)[0].to_string(), d.clone());
            }
        }
        let tfvars = dir.join("terraform.tfvars");
        if tfvars.exists() {
            for a in parse_file(&tfvars).attributes() {
                env_vars.insert(a.key().to_string(), a.expr().clone());
            }
        }
        Stack {
            module: dir_blocks(&repo().join("terraform/modules/vf-export")),
            call,
            env_vars,
            env: Some(env),
        }
    }

    fn name(&self) -> &str {
        self.env.unwrap_or("module defaults")
    }

    fn resource(&self, kind: &str, name: &str) -> &Block {
        self.module
            .iter()
            .find(|b| b.identifier() == "resource" && labels(b) == [kind, name])
            .unwrap_or_else(|| panic!("module has no resource {kind}.{name}"))
    }

    fn data(&self, kind: &str, name: &str) -> &Block {
        self.module
            .iter()
            .find(|b| b.identifier() == "data" && labels(b) == [kind, name])
            .unwrap_or_else(|| panic!("module has no data {kind}.{name}"))
    }

    fn variable(&self, name: &str) -> &Block {
        self.module
            .iter()
            .find(|b| b.identifier() == "variable" && labels(b) == [name])
            .unwrap_or_else(|| panic!("module has no variable {name}"))
    }

    fn local(&self, name: &str) -> &Expression {
        self.module
            .iter()
            .filter(|b| b.identifier() == "locals")
            .find_map(|b| attr(b.body(), name))
            .unwrap_or_else(|| panic!("module has no local {name}"))
    }

    /// Resolves `var.*` (environment value, else module default), `local.*`,
    /// parentheses and unary minus; other expressions (and required variables
    /// without an environment) come back unchanged.
    fn eval(&self, expr: &Expression) -> Expression {
        match expr {
            Expression::Parenthesis(inner) => self.eval(inner),
            Expression::Operation(op) => match op.as_ref() {
                Operation::Unary(u) if u.operator == UnaryOperator::Neg => match self.eval(&u.expr)
                {
                    Expression::Number(n) => Expression::Number(-n),
                    other => panic!("cannot negate {other:?}"),
                },
                _ => expr.clone(),
            },
            Expression::Array(items) => {
                Expression::Array(items.iter().map(|e| self.eval(e)).collect())
            }
            _ => match path_of(expr).as_deref() {
                Some([root, name]) if root == "var" => match self.var_value_opt(name) {
                    Some(value) => self.eval(&value),
                    None => expr.clone(),
                },
                Some([root, name]) if root == "local" => self.eval(self.local(name)),
                _ => expr.clone(),
            },
        }
    }

    /// The value module variable `name` gets in this stack: the environment's
    /// argument, else the module default; None when neither exists (a
    /// required variable seen without an environment).
    fn var_value_opt(&self, name: &str) -> Option<Expression> {
        if let Some(passed) = self.call.get(name) {
            return Some(match path_of(passed).as_deref() {
                Some([root, env_var]) if root == "var" => self
                    .env_vars
                    .get(env_var.as_str())
                    .cloned()
                    .unwrap_or_else(|| panic!("{}: no value for var.{env_var}", self.name())),
                _ => passed.clone(),
            });
        }
        attr(self.variable(name).body(), "default").cloned()
    }

    fn var_value(&self, name: &str) -> Expression {
        self.var_value_opt(name).unwrap_or_else(|| {
            panic!(
                "{}: module variable {name} has no default and is not passed",
                self.name()
            )
        })
    }

    fn num(&self, expr: &Expression) -> f64 {
        match self.eval(expr) {
            Expression::Number(n) => n.as_f64().unwrap(),
            other => panic!(
                "{}: expected a number, got {other:?} from {}",
                self.name(),
                path_str(expr)
            ),
        }
    }

    fn string(&self, expr: &Expression) -> String {
        match self.eval(expr) {
            Expression::String(s) => s,
            other => panic!(
                "{}: expected a string, got {other:?} from {}",
                self.name(),
                path_str(expr)
            ),
        }
    }

    fn strings(&self, expr: &Expression) -> Vec<String> {
        match self.eval(expr) {
            Expression::Array(items) => items.iter().map(|e| self.string(e)).collect(),
            other => panic!("{}: expected a list, got {other:?}", self.name()),
        }
    }

    fn boolean(&self, expr: &Expression) -> bool {
        match self.eval(expr) {
            Expression::Bool(b) => b,
            other => panic!("{}: expected a bool, got {other:?}", self.name()),
        }
    }

    /// The items of a list literal, unresolved.
    fn strings_raw(&self, expr: &Expression) -> Vec<Expression> {
        match expr {
            Expression::Array(items) => items.clone(),
            other => panic!("expected a list literal, got {other:?}"),
        }
    }

    fn num_attr(&self, block: &Block, key: &str) -> f64 {
        self.num(must_attr(block, key))
    }

    fn str_attr(&self, block: &Block, key: &str) -> String {
        self.string(must_attr(block, key))
    }

    /// The resource a one-element `[kind.name.arn]` list points at.
    fn target_of_single_action(&self, list: &Expression) -> &Block {
        let Expression::Array(items) = list else {
            panic!("alarm_actions must be a list")
        };
        assert_eq!(items.len(), 1, "alarm_actions must name exactly one policy");
        let path = path_of(&items[0]).expect("alarm action must be a resource reference");
        let path: Vec<&str> = path.iter().map(|s| s.as_str()).collect();
        match path.as_slice() {
            [kind, name, "arn"] | [kind, name, "[0]", "arn"] => self.resource(kind, name),
            other => panic!("unexpected alarm action {other:?}"),
        }
    }
}

/// Module defaults first, then each environment.
fn stacks() -> Vec<Stack> {
    let mut all = vec![Stack::module_only()];
    all.extend(ENVIRONMENTS.iter().map(|e| Stack::for_env(e)));
    all
}

fn string_expr(s: &str) -> Expression {
    Expression::String(s.to_string())
}

#[test]
fn every_tf_file_parses() {
    let mut files = Vec::new();
    tf_files(&repo().join("terraform"), &mut files);
    for f in &files {
        parse_file(f);
    }
    let names: BTreeSet<String> = files
        .iter()
        .map(|f| {
            f.strip_prefix(repo())
                .unwrap()
                .to_string_lossy()
                .to_string()
        })
        .collect();
    for required in [
        "terraform/modules/vf-export/main.tf",
        "terraform/modules/vf-export/variables.tf",
        "terraform/modules/vf-export/outputs.tf",
        "terraform/modules/vf-export/versions.tf",
        "terraform/environments/dev1/main.tf",
        "terraform/environments/prod1/main.tf",
    ] {
        assert!(
            names.contains(required),
            "missing {required}; have {names:?}"
        );
    }
    for env in ENVIRONMENTS {
        parse_file(
            &repo()
                .join("terraform/environments")
                .join(env)
                .join("terraform.tfvars"),
        );
    }
}

#[test]
fn cpu_alarms_match_the_ops_doc_and_drive_plus_4_minus_1_policies() {
    for s in stacks() {
        // (resource, comparison, threshold, period, evaluation periods, adjustment)
        for (name, op, threshold, period, evaluations, adjustment) in [
            ("cpu_high", "GreaterThanThreshold", 30.0, 60.0, 3.0, 4.0),
            ("cpu_low", "LessThanThreshold", 15.0, 300.0, 3.0, -1.0),
        ] {
            let alarm = s.resource("aws_cloudwatch_metric_alarm", name);
            let ctx = format!("{}: alarm {name}", s.name());
            assert_eq!(s.str_attr(alarm, "namespace"), "AWS/EC2", "{ctx}");
            assert_eq!(s.str_attr(alarm, "metric_name"), "CPUUtilization", "{ctx}");
            assert_eq!(s.str_attr(alarm, "statistic"), "Average", "{ctx}");
            assert_eq!(s.str_attr(alarm, "comparison_operator"), op, "{ctx}");
            assert_eq!(
                s.num_attr(alarm, "threshold"),
                threshold,
                "{ctx}: threshold"
            );
            assert_eq!(s.num_attr(alarm, "period"), period, "{ctx}: period");
            assert_eq!(
                s.num_attr(alarm, "evaluation_periods"),
                evaluations,
                "{ctx}: evaluation_periods"
            );
            let Expression::Object(dims) = must_attr(alarm, "dimensions") else {
                panic!("{ctx}: dimensions")
            };
            let asg = dims
                .iter()
                .find(|(k, _)| matches!(k, ObjectKey::Identifier(i) if i.as_str() == "AutoScalingGroupName"))
                .map(|(_, v)| path_str(v));
            assert_eq!(
                asg.as_deref(),
                Some("aws_autoscaling_group.this.name"),
                "{ctx}: dimension"
            );

            let policy = s.target_of_single_action(must_attr(alarm, "alarm_actions"));
            assert_eq!(s.str_attr(policy, "policy_type"), "SimpleScaling", "{ctx}");
            assert_eq!(
                s.str_attr(policy, "adjustment_type"),
                "ChangeInCapacity",
                "{ctx}"
            );
            assert_eq!(
                s.num_attr(policy, "scaling_adjustment"),
                adjustment,
                "{ctx}: policy adjustment"
            );
            assert_eq!(
                path_str(must_attr(policy, "autoscaling_group_name")),
                "aws_autoscaling_group.this.name"
            );
        }
    }
}

#[test]
fn elb_is_internal_cross_zone_draining_600_with_443_to_8080_and_heartbeat_check() {
    let s = Stack::module_only();
    let elb = s.resource("aws_elb", "this");
    assert_eq!(must_attr(elb, "internal"), &Expression::Bool(true));
    assert_eq!(
        must_attr(elb, "cross_zone_load_balancing"),
        &Expression::Bool(true)
    );
    assert_eq!(
        must_attr(elb, "connection_draining"),
        &Expression::Bool(true)
    );
    assert_eq!(s.num_attr(elb, "connection_draining_timeout"), 600.0);

    let listeners = sub_blocks(elb, "listener");
    assert_eq!(listeners.len(), 1, "exactly one listener");
    let l = listeners[0];
    assert_eq!(s.num_attr(l, "lb_port"), 443.0);
    assert_eq!(s.str_attr(l, "lb_protocol").to_lowercase(), "https");
    assert_eq!(s.num_attr(l, "instance_port"), 8080.0);
    assert_eq!(s.str_attr(l, "instance_protocol").to_lowercase(), "http");
    assert_eq!(
        path_str(must_attr(l, "ssl_certificate_id")),
        "var.acm_certificate_arn"
    );

    let hc = one_block(elb, "health_check");
    assert_eq!(s.str_attr(hc, "target"), "HTTP:8080/heartbeat");
    assert_eq!(s.num_attr(hc, "interval"), 30.0);
    assert_eq!(s.num_attr(hc, "timeout"), 3.0);
    assert_eq!(s.num_attr(hc, "healthy_threshold"), 3.0);
    assert_eq!(s.num_attr(hc, "unhealthy_threshold"), 2.0);
}

#[test]
fn launch_template_requires_imdsv2_encrypts_root_and_boots_the_cloud_config() {
    let s = Stack::module_only();
    let lt = s.resource("aws_launch_template", "this");
    let md = one_block(lt, "metadata_options");
    assert_eq!(s.str_attr(md, "http_tokens"), "required");
    assert_eq!(s.str_attr(md, "http_endpoint"), "enabled");

    let bdm = one_block(lt, "block_device_mappings");
    assert_eq!(
        must_attr(one_block(bdm, "ebs"), "encrypted"),
        &Expression::Bool(true)
    );
    assert!(
        !sub_blocks(lt, "iam_instance_profile").is_empty(),
        "instance profile"
    );
    assert_eq!(
        path_str(must_attr(one_block(lt, "iam_instance_profile"), "arn")),
        "aws_iam_instance_profile.this.arn"
    );

    // user_data = base64encode(local.user_data), local.user_data = templatefile(".../cloud-config/vf-export.yaml", ...)
    let Expression::FuncCall(call) = must_attr(lt, "user_data") else {
        panic!("user_data must be a call")
    };
    assert_eq!(call.name.name.as_str(), "base64encode");
    let Expression::FuncCall(tpl) = s.eval(&call.args[0]) else {
        panic!("user_data must render a template")
    };
    assert_eq!(tpl.name.name.as_str(), "templatefile");
    assert!(
        hcl::format::to_string(&tpl.args[0])
            .unwrap()
            .to_string()
            .ends_with("/cloud-config/vf-export.yaml\""),
        "templatefile must render cloud-config/vf-export.yaml"
    );

    // Flatcar AMI by owner and name.
    assert_eq!(path_str(must_attr(lt, "image_id")), "local.ami_id");
    let ami = s.data("aws_ami", "flatcar");
    assert_eq!(
        path_str(&s.strings_raw(must_attr(ami, "owners"))[0]),
        "var.flatcar_ami_owner"
    );
    let values = ami_name_filter(&s);
    assert!(
        values.contains("Flatcar-"),
        "AMI name filter must select Flatcar: {values}"
    );
}

#[test]
fn asg_uses_elb_health_checks_cooldown_300_all_group_metrics_and_1_1_sizes() {
    for s in stacks() {
        let asg = s.resource("aws_autoscaling_group", "this");
        assert_eq!(
            path_str(must_attr(asg, "min_size")),
            "var.app_instance_min_count"
        );
        assert_eq!(
            path_str(must_attr(asg, "max_size")),
            "var.app_instance_max_count"
        );
        assert_eq!(s.num_attr(asg, "min_size"), 1.0, "{}: min", s.name());
        assert_eq!(s.num_attr(asg, "max_size"), 1.0, "{}: max", s.name());
        assert_eq!(s.str_attr(asg, "health_check_type"), "ELB");
        assert_eq!(s.num_attr(asg, "default_cooldown"), 300.0);
        let metrics: BTreeSet<String> = s
            .strings(must_attr(asg, "enabled_metrics"))
            .into_iter()
            .collect();
        let expected: BTreeSet<String> = GROUP_METRICS.iter().map(|m| m.to_string()).collect();
        assert_eq!(metrics, expected);
        assert_eq!(
            s.strings_raw(must_attr(asg, "load_balancers"))
                .iter()
                .map(path_str)
                .collect::<Vec<_>>(),
            ["aws_elb.this.name"]
        );
        let lt = one_block(asg, "launch_template");
        assert_eq!(path_str(must_attr(lt, "id")), "aws_launch_template.this.id");
    }
}

#[test]
fn instance_types_per_environment() {
    for (env, expected) in [("dev1", "t2.medium"), ("prod1", "t2.xlarge")] {
        let s = Stack::for_env(env);
        let lt = s.resource("aws_launch_template", "this");
        assert_eq!(s.str_attr(lt, "instance_type"), expected, "{env}");
    }
}

#[test]
fn no_ingress_from_anywhere() {
    const OPEN: [&str; 2] = ["0.0.0.0/0", "::/0"];
    for s in stacks() {
        let mut ingress_exprs: Vec<(String, Expression)> = Vec::new();
        for b in s.module.iter().filter(|b| b.identifier() == "resource") {
            let l = labels(b);
            let id = format!("{}.{}", l[0], l[1]);
            match l[0] {
                "aws_vpc_security_group_ingress_rule" => {
                    walk_body(b.body(), &mut |e| {
                        ingress_exprs.push((id.clone(), e.clone()))
                    });
                }
                "aws_security_group_rule"
                    if attr(b.body(), "type") == Some(&string_expr("ingress")) =>
                {
                    walk_body(b.body(), &mut |e| {
                        ingress_exprs.push((id.clone(), e.clone()))
                    });
                }
                "aws_security_group" => {
                    for ing in sub_blocks(b, "ingress") {
                        walk_body(ing.body(), &mut |e| {
                            ingress_exprs.push((id.clone(), e.clone()))
                        });
                    }
                }
                _ => {}
            }
        }
        assert!(
            ingress_exprs.len() > 10,
            "no ingress rules found: the check would be vacuous"
        );
        let mut cidrs_seen = 0;
        for (id, e) in &ingress_exprs {
            let resolved = s.eval(e);
            let mut check = |x: &Expression| {
                if let Expression::String(v) = x {
                    if v.contains('/') {
                        cidrs_seen += 1;
                    }
                    assert!(
                        !OPEN.contains(&v.as_str()),
                        "{}: {id} allows ingress from {v}",
                        s.name()
                    );
                }
            };
            walk(&resolved, &mut check);
            // for_each = toset(var.x): the resolved list behind each.value.
            if let Expression::FuncCall(c) = e {
                for a in &c.args {
                    walk(&s.eval(a), &mut check);
                }
            }
        }
        assert!(cidrs_seen > 0, "{}: no ingress CIDR resolved", s.name());
    }
}

#[test]
fn required_tags_are_set_and_propagated_to_instances() {
    for s in stacks() {
        let Expression::FuncCall(merge) = s.local("tags") else {
            panic!("local.tags must be merge(...)")
        };
        assert_eq!(merge.name.name.as_str(), "merge");
        let Some(Expression::Object(required)) = merge.args.last() else {
            panic!("the required tags must be the last merge argument (not overridable)")
        };
        let tags: BTreeMap<String, Expression> = required
            .iter()
            .map(|(k, v)| {
                let ObjectKey::Identifier(k) = k else {
                    panic!("tag keys must be identifiers")
                };
                (k.as_str().to_string(), s.eval(v))
            })
            .collect();
        assert_eq!(tags["ProductCode"], string_expr("PRD1541"));
        assert_eq!(tags["InventoryCode"], string_expr("vf-export"));
        assert_eq!(tags["Prometheus"], string_expr("enabled"));
        assert_eq!(tags["Prometheus8080"], string_expr("enabled"));
        let Expression::String(rh) = &tags["RuntimeHours"] else {
            panic!("RuntimeHours")
        };
        assert!(!rh.is_empty());
        if let Some(env) = s.env {
            assert_eq!(tags["Environment"], string_expr(env));
        } else {
            assert_eq!(path_str(required.iter().find(|(k, _)| matches!(k, ObjectKey::Identifier(i) if i.as_str() == "Environment")).unwrap().1), "var.environment");
        }

        let asg = s.resource("aws_autoscaling_group", "this");
        let dynamic = sub_blocks(asg, "dynamic")
            .into_iter()
            .find(|d| labels(d) == ["tag"])
            .expect("ASG dynamic \"tag\" block");
        assert_eq!(path_str(must_attr(dynamic, "for_each")), "local.tags");
        let content = one_block(dynamic, "content");
        assert_eq!(
            must_attr(content, "propagate_at_launch"),
            &Expression::Bool(true)
        );

        let lt = s.resource("aws_launch_template", "this");
        let specs = sub_blocks(lt, "tag_specifications");
        assert!(specs
            .iter()
            .any(|t| s.str_attr(t, "resource_type") == "instance"));
        for t in specs {
            let rendered = hcl::format::to_string(must_attr(t, "tags")).unwrap();
            assert!(
                rendered.contains("local.tags"),
                "launch template tags must include local.tags"
            );
        }
    }
}

#[test]
fn assume_role_only_on_the_sfmc_and_tmol_roles() {
    let s = Stack::module_only();
    let mut assume_statements = 0;
    for doc in s
        .module
        .iter()
        .filter(|b| b.identifier() == "data" && labels(b)[0] == "aws_iam_policy_document")
    {
        for st in sub_blocks(doc, "statement") {
            let actions: Vec<String> = s.strings(must_attr(st, "actions"));
            let assumes = actions
                .iter()
                .any(|a| a == "sts:AssumeRole" || a == "sts:*" || a == "*");
            if !assumes || !sub_blocks(st, "principals").is_empty() {
                continue; // not an AssumeRole grant, or a trust policy
            }
            assume_statements += 1;
            let resources = s.strings_raw(must_attr(st, "resources"));
            let refs: BTreeSet<String> = resources.iter().map(path_str).collect();
            assert_eq!(
                refs,
                BTreeSet::from([
                    "var.sfmc_role_arn".to_string(),
                    "var.tmol_role_arn".to_string()
                ]),
                "sts:AssumeRole must name exactly the SFMC and TMOL roles"
            );
            assert_eq!(actions, ["sts:AssumeRole"]);
        }
        for st in sub_blocks(doc, "statement") {
            if let Some(r) = attr(st.body(), "resources") {
                let acts = s.strings(must_attr(st, "actions"));
                if acts.iter().any(|a| a.starts_with("sts:")) {
                    walk(r, &mut |e| {
                        assert_ne!(e, &string_expr("*"), "sts statement with resource *")
                    });
                }
            }
        }
    }
    assert_eq!(assume_statements, 1, "one sts:AssumeRole grant");
    for env in ENVIRONMENTS {
        let e = Stack::for_env(env);
        for v in ["sfmc_role_arn", "tmol_role_arn"] {
            let arn = e.string(&e.var_value(v));
            assert!(
                arn.starts_with("arn:aws:iam::") && !arn.contains('*'),
                "{env}: {v} = {arn}"
            );
        }
    }
}

#[test]
fn put_metric_data_is_limited_to_the_service_namespace() {
    let s = Stack::module_only();
    let doc = s.data("aws_iam_policy_document", "this");
    let st = statement_granting(&s, doc, "cloudwatch:PutMetricData");
    let cond = one_block(st, "condition");
    assert_eq!(s.str_attr(cond, "test"), "StringEquals");
    assert_eq!(s.str_attr(cond, "variable"), "cloudwatch:namespace");
    assert_eq!(s.strings(must_attr(cond, "values")), ["VfExport"]);
    // S3 only on the four service buckets.
    let buckets: Vec<String> = s
        .strings_raw(s.local("service_bucket_arns"))
        .iter()
        .map(path_str)
        .collect();
    assert_eq!(
        buckets,
        [
            "var.exports_bucket_arn",
            "var.scoring_bucket_arn",
            "var.vf_scoring_bucket_arn",
            "var.campaign_data_bucket_arn"
        ]
    );
    for st in sub_blocks(doc, "statement") {
        if s.strings(must_attr(st, "actions"))
            .iter()
            .any(|a| a.starts_with("s3:"))
        {
            let r = hcl::format::to_string(must_attr(st, "resources")).unwrap();
            assert!(
                r.contains("local.service_bucket_arns"),
                "S3 statement outside the service buckets: {r}"
            );
        }
    }
}

#[test]
fn backlog_step_scaling_exists_and_is_off_by_default() {
    let s = Stack::module_only();
    let v = s.variable("enable_backlog_scaling");
    assert_eq!(path_str(must_attr(v, "type")), "bool");
    assert_eq!(must_attr(v, "default"), &Expression::Bool(false));

    let policy = s.resource("aws_autoscaling_policy", "export_backlog");
    let alarm = s.resource("aws_cloudwatch_metric_alarm", "export_backlog_high");
    for b in [policy, alarm] {
        let Expression::Conditional(c) = must_attr(b, "count") else {
            panic!("count must be a conditional")
        };
        assert_eq!(path_str(&c.cond_expr), "var.enable_backlog_scaling");
        assert_eq!(s.num(&c.true_expr), 1.0);
        assert_eq!(s.num(&c.false_expr), 0.0);
    }
    assert_eq!(s.str_attr(policy, "policy_type"), "StepScaling");
    assert!(!sub_blocks(policy, "step_adjustment").is_empty());
    assert_eq!(s.str_attr(alarm, "namespace"), "VfExport");
    assert_eq!(s.str_attr(alarm, "metric_name"), "ExportBacklog");
    let dims = hcl::format::to_string(must_attr(alarm, "dimensions")).unwrap();
    assert!(dims.contains("AutoScalingGroupName"), "{dims}");
    assert_eq!(
        path_str(&s.strings_raw(must_attr(alarm, "alarm_actions"))[0]),
        "aws_autoscaling_policy.export_backlog.[0].arn"
    );
    for env in ENVIRONMENTS {
        let e = Stack::for_env(env);
        assert!(
            !e.boolean(&e.var_value("enable_backlog_scaling")),
            "{env} enables backlog scaling"
        );
    }
}

#[test]
fn operational_alarms_notify_the_sns_topic() {
    let s = Stack::module_only();
    for (name, ns, metric, op, threshold) in [
        (
            "elb_unhealthy_hosts",
            "AWS/ELB",
            "UnHealthyHostCount",
            "GreaterThanThreshold",
            Some(0.0),
        ),
        (
            "elb_backend_5xx",
            "AWS/ELB",
            "HTTPCode_Backend_5XX",
            "GreaterThanThreshold",
            None,
        ),
        (
            "asg_in_service_below_min",
            "AWS/AutoScaling",
            "GroupInServiceInstances",
            "LessThanThreshold",
            Some(1.0),
        ),
    ] {
        let a = s.resource("aws_cloudwatch_metric_alarm", name);
        assert_eq!(s.str_attr(a, "namespace"), ns, "{name}");
        assert_eq!(s.str_attr(a, "metric_name"), metric, "{name}");
        assert_eq!(s.str_attr(a, "comparison_operator"), op, "{name}");
        if let Some(t) = threshold {
            assert_eq!(s.num_attr(a, "threshold"), t, "{name}");
        }
        let actions: Vec<String> = s
            .strings_raw(must_attr(a, "alarm_actions"))
            .iter()
            .map(path_str)
            .collect();
        assert_eq!(actions, ["aws_sns_topic.alarms.arn"], "{name}");
    }
    let below_min = s.resource("aws_cloudwatch_metric_alarm", "asg_in_service_below_min");
    assert_eq!(
        path_str(must_attr(below_min, "threshold")),
        "var.app_instance_min_count"
    );
}

#[test]
fn dns_alias_points_at_the_elb() {
    let s = Stack::module_only();
    let rec = s.resource("aws_route53_record", "this");
    let alias = one_block(rec, "alias");
    assert_eq!(path_str(must_attr(alias, "name")), "aws_elb.this.dns_name");
    assert_eq!(
        path_str(must_attr(alias, "zone_id")),
        "aws_elb.this.zone_id"
    );
    let zone = hcl::format::to_string(s.local("dns_zone_name")).unwrap();
    assert_eq!(zone.trim(), "\"titan.${var.account_tier}-tmaws.io\"");
    let name = hcl::format::to_string(s.local("dns_record_name")).unwrap();
    assert!(
        name.trim().starts_with("\"vf-export-${var.environment}-"),
        "{name}"
    );
    for (env, tier) in [("dev1", "nonprod"), ("prod1", "prod")] {
        let e = Stack::for_env(env);
        assert_eq!(e.string(&e.var_value("account_tier")), tier);
    }
}

#[test]
fn module_is_reusable_variables_typed_providers_pinned_no_account_ids() {
    let s = Stack::module_only();
    for v in s.module.iter().filter(|b| b.identifier() == "variable") {
        assert!(
            attr(v.body(), "type").is_some(),
            "variable {:?} has no type",
            labels(v)
        );
        assert!(
            attr(v.body(), "description").is_some(),
            "variable {:?} has no description",
            labels(v)
        );
    }
    for out in ["elb_dns_name", "asg_name", "iam_role_arn"] {
        assert!(
            s.module
                .iter()
                .any(|b| b.identifier() == "output" && labels(b) == [out]),
            "missing output {out}"
        );
    }
    let tf = s
        .module
        .iter()
        .find(|b| b.identifier() == "terraform")
        .expect("terraform block");
    let providers = one_block(tf, "required_providers");
    let aws = hcl::format::to_string(must_attr(providers, "aws")).unwrap();
    assert!(
        aws.contains("hashicorp/aws") && aws.contains("version"),
        "{aws}"
    );

    // No account ids or literal ARNs inside the module (validation regexes aside).
    for b in s.module.iter().filter(|b| b.identifier() != "variable") {
        walk_body(b.body(), &mut |e| {
            let text = match e {
                Expression::String(v) => v.clone(),
                Expression::TemplateExpr(t) => t.to_string(),
                _ => return,
            };
            let digits = text
                .split(|c: char| !c.is_ascii_digit())
                .any(|run| run.len() == 12);
            assert!(!digits, "account id in module: {text}");
            assert!(
                !text.starts_with("arn:aws:"),
                "hard-coded ARN in module: {text}"
            );
        });
    }
}

#[test]
fn environments_use_s3_state_with_dynamodb_lock() {
    for env in ENVIRONMENTS {
        let blocks = dir_blocks(&repo().join("terraform/environments").join(env));
        let tf = blocks
            .iter()
            .find(|b| b.identifier() == "terraform")
            .expect("terraform block");
        let backend = sub_blocks(tf, "backend")
            .into_iter()
            .find(|b| labels(b) == ["s3"])
            .expect("backend s3");
        for key in ["bucket", "key", "region", "dynamodb_table"] {
            assert!(
                attr(backend.body(), key).is_some(),
                "{env}: backend s3 lacks {key}"
            );
        }
        assert_eq!(must_attr(backend, "encrypt"), &Expression::Bool(true));
        let Expression::String(key) = must_attr(backend, "key") else {
            panic!("key")
        };
        assert!(
            key.contains(env),
            "{env}: state key {key} must be per environment"
        );
        assert!(blocks
            .iter()
            .any(|b| b.identifier() == "provider" && labels(b) == ["aws"]));
    }
}

/// `KEY=value` lines of a systemd unit (continuations joined), by key.
fn unit_directives(path: &Path) -> BTreeMap<String, Vec<String>> {
    let text = fs::read_to_string(path).unwrap();
    let joined = text.replace("\\\n", " ");
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in joined.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.entry(k.trim().to_string())
                .or_default()
                .push(v.trim().to_string());
        }
    }
    out
}

#[test]
fn drain_540_below_stop_timeout_600_and_elb_draining_600() {
    let cc = fs::read_to_string(repo().join("cloud-config/vf-export.yaml")).unwrap();
    let drain: Vec<u64> = cc
        .lines()
        .filter_map(|l| l.trim().strip_prefix("DRAIN_TIMEOUT_SECS="))
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(drain, [540]);
    let unit = unit_directives(&repo().join("systemd/campaigns.service"));
    let stop: u64 = unit["TimeoutStopSec"][0].parse().unwrap();
    assert!(stop >= 600 && stop > drain[0], "TimeoutStopSec {stop}");
    assert_eq!(unit["KillSignal"], ["SIGTERM"]);
    assert_eq!(unit["Restart"], ["always"]);
    assert!(unit["EnvironmentFile"].contains(&"/etc/vf-export.env".to_string()));
    let start = &unit["ExecStart"][0];
    assert!(start.contains("--name vf-export"), "{start}");
    let docker_stop = &unit["ExecStop"][0];
    let t: u64 = docker_stop
        .split("--time ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        t > drain[0] && t < stop,
        "docker stop --time {t} must sit between drain and TimeoutStopSec"
    );
    let s = Stack::module_only();
    assert_eq!(
        s.num_attr(s.resource("aws_elb", "this"), "connection_draining_timeout"),
        stop as f64
    );
}

#[test]
fn host_units_carry_the_ops_numbers() {
    let ne = unit_directives(&repo().join("systemd/node-exporter.service"));
    assert!(ne["ExecStart"][0].contains("--web.listen-address=:9100"));
    let falcon = unit_directives(&repo().join("systemd/falcon-sensor.service"));
    let start = &falcon["ExecStart"][0];
    assert!(
        start.contains("ProductCode/PRD1541") && start.contains("InventoryCode/vf-export"),
        "{start}"
    );

    let conf = fs::read_to_string(repo().join("systemd/fluentd/fluent.conf")).unwrap();
    let directives: Vec<(String, String)> = conf
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('<'))
        .filter_map(|l| {
            l.split_once(' ')
                .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        })
        .collect();
    let get = |k: &str| -> Vec<&str> {
        directives
            .iter()
            .filter(|(dk, _)| dk == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("port")[0], "24224", "forward input port");
    assert!(get("@type").contains(&"forward") && get("@type").contains(&"elasticsearch"));
    assert!(get("@type").contains(&"json"), "JSON parser");
    assert_eq!(get("logstash_prefix"), ["logstash-application_log"]);
    assert_eq!(get("flush_interval").last().copied(), Some("5s"));
    assert_eq!(get("chunk_limit_size"), ["16MB"]);
    assert_eq!(get("queue_limit_length"), ["64"]);
    for field in [
        "aws_region",
        "product_name",
        "environment_tag",
        "instance_id",
        "ip_address",
    ] {
        assert_eq!(get(field).len(), 1, "record_transformer field {field}");
    }
    // The cloud-config hands the unit files to Flatcar and installs them all.
    let cc = fs::read_to_string(repo().join("cloud-config/vf-export.yaml")).unwrap();
    for unit in [
        "campaigns.service",
        "node-exporter.service",
        "fluentd.service",
        "falcon-sensor.service",
    ] {
        assert!(
            cc.contains(&format!("- name: {unit}")),
            "cloud-config does not install {unit}"
        );
    }
}

// ---------------------------------------------------------------------------
// Rollouts, the termination lifecycle hook, the image repository, and what
// the infrastructure takes from the binary (issue 15). The cloud-config is
// rendered per environment the way terraform's templatefile() would
// (hcl-rs evaluates the module's locals with the environment's variables),
// and the env file it writes is validated by the binary's own Settings.
// ---------------------------------------------------------------------------

use clap::{CommandFactory, FromArgMatches};
use hcl::eval::{Context, Evaluate, FuncArgs, FuncDef, ParamType};
use hcl::Value;
use vf_export::config::{Cli, Settings};
use vf_export::telemetry::cloudwatch;

/// The margin of the hook's heartbeat over the drain timeout (time to hand
/// back and to complete the action).
const HEARTBEAT_MARGIN_SECS: u64 = 60;
/// Variables that must come from SSM, never from the rendered env file
/// (config.md: `*_FILE` forms included).
const SECRET_VARS: [&str; 6] = [
    "MONGODB_URI",
    "MONGODB_URI_FILE",
    "JWT_SECRET",
    "JWT_SECRET_FILE",
    "JWT_PUBLIC_KEY",
    "JWT_PUBLIC_KEY_FILE",
];

fn arg_str(args: &FuncArgs, i: usize) -> Result<&str, String> {
    args[i]
        .as_str()
        .ok_or_else(|| format!("argument {i} must be a string"))
}

fn tf_file(args: FuncArgs) -> Result<Value, String> {
    let path = arg_str(&args, 0)?;
    fs::read_to_string(path)
        .map(Value::from)
        .map_err(|e| format!("{path}: {e}"))
}

fn tf_templatefile(args: FuncArgs) -> Result<Value, String> {
    let path = arg_str(&args, 0)?;
    let text = fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let template: hcl::Template = text.parse().map_err(|e| format!("{path}: {e}"))?;
    let mut ctx = tf_functions();
    for (k, v) in args[1].as_object().ok_or("vars must be an object")? {
        ctx.declare_var(k.as_str(), v.clone());
    }
    template
        .evaluate(&ctx)
        .map(Value::from)
        .map_err(|e| format!("{path}: {e}"))
}

/// terraform's indent(): every line but the first gets `n` spaces.
fn tf_indent(args: FuncArgs) -> Result<Value, String> {
    let n = args[0].as_u64().ok_or("indent needs a number")? as usize;
    let text = arg_str(&args, 1)?;
    Ok(text.replace('\n', &format!("\n{}", " ".repeat(n))).into())
}

fn tf_element(args: FuncArgs) -> Result<Value, String> {
    let list = args[0].as_array().ok_or("element needs a list")?;
    let i = args[1].as_u64().ok_or("element needs an index")? as usize;
    Ok(list[i % list.len()].clone())
}

fn tf_split(args: FuncArgs) -> Result<Value, String> {
    let (sep, text) = (arg_str(&args, 0)?, arg_str(&args, 1)?);
    Ok(text.split(sep).map(Value::from).collect())
}

fn tf_join(args: FuncArgs) -> Result<Value, String> {
    let sep = arg_str(&args, 0)?;
    let items: Vec<&str> = args[1]
        .as_array()
        .ok_or("join needs a list")?
        .iter()
        .map(|v| v.as_str().ok_or("join needs strings"))
        .collect::<Result<_, _>>()?;
    Ok(items.join(sep).into())
}

fn tf_merge(args: FuncArgs) -> Result<Value, String> {
    let mut out = hcl::Map::new();
    for a in args.iter() {
        out.extend(a.as_object().ok_or("merge needs objects")?.clone());
    }
    Ok(Value::Object(out))
}

fn tf_title(args: FuncArgs) -> Result<Value, String> {
    let text = arg_str(&args, 0)?;
    let mut chars = text.chars();
    Ok(chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect::<String>())
        .unwrap_or_default()
        .into())
}

fn tf_startswith(args: FuncArgs) -> Result<Value, String> {
    Ok(arg_str(&args, 0)?.starts_with(arg_str(&args, 1)?).into())
}

/// The terraform functions the module's locals and the template use.
fn tf_functions() -> Context<'static> {
    let mut ctx = Context::new();
    let any = |n: usize| FuncDef::builder().params(vec![ParamType::Any; n]);
    ctx.declare_func("file", any(1).build(tf_file));
    ctx.declare_func("templatefile", any(2).build(tf_templatefile));
    ctx.declare_func("indent", any(2).build(tf_indent));
    ctx.declare_func("element", any(2).build(tf_element));
    ctx.declare_func("split", any(2).build(tf_split));
    ctx.declare_func("join", any(2).build(tf_join));
    ctx.declare_func("title", any(1).build(tf_title));
    ctx.declare_func("startswith", any(2).build(tf_startswith));
    ctx.declare_func(
        "merge",
        FuncDef::builder()
            .variadic_param(ParamType::Any)
            .build(tf_merge),
    );
    ctx
}

fn object<const N: usize>(entries: [(&str, Value); N]) -> Value {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// One environment's module, evaluated: `var.*` from its tfvars and the
/// module defaults, `local.*` as terraform computes them, data sources and
/// the ECR repository URL in the shape AWS gives them.
struct Evaluated {
    ctx: Context<'static>,
    locals: hcl::Map<String, Value>,
}

impl Evaluated {
    fn new(s: &Stack) -> Evaluated {
        let mut vars = hcl::Map::new();
        for v in s.module.iter().filter(|b| b.identifier() == "variable") {
            let name = labels(v)[0];
            if let Some(e) = s.var_value_opt(name) {
                let value = e
                    .evaluate(&Context::new())
                    .unwrap_or_else(|err| panic!("{}: var.{name}: {err}", s.name()));
                vars.insert(name.to_string(), value);
            }
        }
        let account = s
            .env_vars
            .get("aws_account_id")
            .map(|a| s.string(a))
            .expect("the environment's aws_account_id");
        let base = |locals: &hcl::Map<String, Value>| {
            let mut ctx = tf_functions();
            ctx.declare_var("var", Value::Object(vars.clone()));
            ctx.declare_var("local", Value::Object(locals.clone()));
            let current = |k: &str, v: &str| object([("current", object([(k, v.into())]))]);
            ctx.declare_var(
                "data",
                object([
                    ("aws_region", current("name", "us-east-1")),
                    ("aws_partition", current("partition", "aws")),
                    ("aws_caller_identity", current("account_id", &account)),
                    (
                        "aws_ami",
                        object([(
                            "flatcar",
                            vec![object([("id", "ami-0123456789abcdef0".into())])].into(),
                        )]),
                    ),
                ]),
            );
            let module = repo().join("terraform/modules/vf-export");
            ctx.declare_var(
                "path",
                object([("module", module.display().to_string().into())]),
            );
            if let Some(name) = locals.get("name").and_then(Value::as_str) {
                let url = format!("{account}.dkr.ecr.us-east-1.amazonaws.com/{name}");
                ctx.declare_var(
                    "aws_ecr_repository",
                    object([("this", object([("repository_url", url.into())]))]),
                );
            }
            ctx
        };
        // Locals refer to locals: evaluate until nothing more resolves.
        let exprs: Vec<(String, Expression)> = s
            .module
            .iter()
            .filter(|b| b.identifier() == "locals")
            .flat_map(|b| b.body().attributes())
            .map(|a| (a.key().to_string(), a.expr().clone()))
            .collect();
        let mut locals = hcl::Map::new();
        let mut errors = BTreeMap::new();
        loop {
            let ctx = base(&locals);
            let before = locals.len();
            for (k, e) in &exprs {
                if locals.contains_key(k) {
                    continue;
                }
                match e.evaluate(&ctx) {
                    Ok(v) => {
                        locals.insert(k.clone(), v);
                    }
                    Err(err) => {
                        errors.insert(k.clone(), err.to_string());
                    }
                }
            }
            if locals.len() == before {
                break;
            }
        }
        assert!(
            locals.contains_key("user_data"),
            "{}: local.user_data does not render: {errors:?}",
            s.name()
        );
        Evaluated {
            ctx: base(&locals),
            locals,
        }
    }

    fn value(&self, expr: &Expression) -> Value {
        expr.evaluate(&self.ctx)
            .unwrap_or_else(|e| panic!("{}: {e}", path_str(expr)))
    }

    fn string(&self, expr: &Expression) -> String {
        match self.value(expr) {
            Value::String(s) => s,
            other => panic!("{}: expected a string, got {other:?}", path_str(expr)),
        }
    }

    fn user_data(&self) -> &str {
        self.locals["user_data"].as_str().expect("user_data string")
    }
}

/// The body of a `write_files` entry of the rendered cloud-config (a
/// `content: |` block scalar).
fn written_file(yaml: &str, path: &str) -> String {
    let lines: Vec<&str> = yaml.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim() == format!("- path: {path}"))
        .unwrap_or_else(|| panic!("cloud-config writes no {path}"));
    let key = (start + 1..lines.len())
        .find(|&i| lines[i].trim() == "content: |")
        .unwrap_or_else(|| panic!("{path}: no content: | block"));
    let indent_of = |l: &str| l.len() - l.trim_start().len();
    let key_indent = indent_of(lines[key]);
    let body: Vec<&str> = lines[key + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || indent_of(l) > key_indent)
        .copied()
        .collect();
    let block_indent = body
        .iter()
        .find(|l| !l.trim().is_empty())
        .map(|l| indent_of(l))
        .unwrap_or(0);
    body.iter()
        .map(|l| l.get(block_indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `KEY=value` lines of an env file.
fn env_lines(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY=value: {l}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The binary's variables: `serve`'s clap arguments by environment name,
/// with their long flag.
fn serve_variables() -> BTreeMap<String, String> {
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").expect("serve subcommand");
    serve
        .get_arguments()
        .filter_map(|a| {
            Some((
                a.get_env()?.to_str()?.to_string(),
                a.get_long()?.to_string(),
            ))
        })
        .collect()
}

/// `vf-export serve` validated with exactly `env` (flags; the test
/// process's own environment is ignored), as `Settings::validate` does at
/// start.
fn validate_serve(
    env: &BTreeMap<String, String>,
) -> Result<vf_export::config::Config, vf_export::config::ConfigError> {
    let flags = serve_variables();
    let cli = Cli::command().mut_subcommand("serve", |sub| {
        let ids: Vec<clap::Id> = sub.get_arguments().map(|a| a.get_id().clone()).collect();
        ids.into_iter().fold(sub, |sub, id| {
            sub.mut_arg(id, |a| a.env(None::<&'static str>))
        })
    });
    // The secrets are no flags (the environment or a *_FILE only): set on
    // the settings as the environment would, or unset.
    let secret = |k: &str| env.get(k).map(|v| v.as_str().into());
    let mut argv = vec!["vf-export".to_string(), "serve".to_string()];
    for (k, v) in env {
        if matches!(k.as_str(), "MONGODB_URI" | "JWT_SECRET") {
            continue;
        }
        argv.push(format!("--{}", flags[k]));
        argv.push(v.clone());
    }
    let matches = cli.try_get_matches_from(argv).expect("flags parse");
    let sub = matches.subcommand_matches("serve").expect("serve");
    let mut settings = Settings::from_arg_matches(sub).expect("settings");
    settings.mongodb_uri = secret("MONGODB_URI");
    settings.jwt_secret = secret("JWT_SECRET");
    settings.validate(vf_export::config::Needs::Serve)
}

/// Whether the binary's code names `KEY` (variables read outside clap, such
/// as RUST_LOG).
fn read_by_the_binary(key: &str) -> bool {
    let mut files = Vec::new();
    fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                rs_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    rs_files(&repo().join("src"), &mut files);
    let needle = format!("\"{key}\"");
    files
        .iter()
        .any(|f| fs::read_to_string(f).unwrap().contains(&needle))
}

/// The values of the Flatcar AMI's name filter, as written.
fn ami_name_filter(s: &Stack) -> String {
    let ami = s.data("aws_ami", "flatcar");
    let name_filter = sub_blocks(ami, "filter")
        .into_iter()
        .find(|f| s.str_attr(f, "name") == "name")
        .expect("AMI name filter");
    hcl::format::to_string(must_attr(name_filter, "values")).unwrap()
}

/// The statement of a policy document that grants `action`.
fn statement_granting<'a>(s: &Stack, doc: &'a Block, action: &str) -> &'a Block {
    sub_blocks(doc, "statement")
        .into_iter()
        .find(|st| {
            s.strings(must_attr(st, "actions"))
                .iter()
                .any(|a| a == action)
        })
        .unwrap_or_else(|| panic!("no statement grants {action}"))
}

/// The host side: the units and their helper.
fn host_files() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for dir in ["systemd", "systemd/bin"] {
        for e in fs::read_dir(repo().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                let text = fs::read_to_string(&p).unwrap();
                out.push((p, text));
            }
        }
    }
    out
}

#[test]
fn the_rendered_env_file_is_what_serve_requires_and_names_what_the_alarms_filter_on() {
    let binary = serve_variables();
    let host = host_files();
    for env in ENVIRONMENTS {
        let s = Stack::for_env(env);
        let m = Evaluated::new(&s);
        let file = env_lines(&written_file(m.user_data(), "/etc/vf-export.env"));

        // No secret in user data; every other line is for the binary or
        // for a unit (no misspelt variable silently ignored).
        for k in SECRET_VARS {
            assert!(!file.contains_key(k), "{env}: secret {k} in user data");
        }
        for k in file.keys() {
            let for_binary = binary.contains_key(k) || read_by_the_binary(k);
            let for_units = host.iter().any(|(_, text)| {
                text.contains(&format!("${{{k}}}"))
                    || text.contains(&format!("${{{k}:"))
                    || text.contains(&format!("${k}"))
            });
            assert!(
                for_binary || for_units,
                "{env}: /etc/vf-export.env sets {k}, which neither the binary nor a unit reads"
            );
        }

        // The binary's own validation says what serve requires: with the
        // file, only secrets (from SSM at start) may be missing.
        let mut given: BTreeMap<String, String> = file
            .iter()
            .filter(|(k, _)| binary.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let cfg = loop {
            match validate_serve(&given) {
                Ok(cfg) => break cfg,
                Err(e) => {
                    assert!(
                        SECRET_VARS.contains(&e.var) && !given.contains_key(e.var),
                        "{env}: the env file terraform renders does not satisfy serve: {e}"
                    );
                    let stand_in = match e.var {
                        "MONGODB_URI" => "mongodb://mongo.internal:27017/",
                        _ => "a-secret-from-ssm",
                    };
                    given.insert(e.var.to_string(), stand_in.to_string());
                }
            }
        };

        // The group, its hook and the namespace the binary will use are
        // the ones terraform creates and alarms on.
        let asg = s.resource("aws_autoscaling_group", "this");
        let asg_name = m.string(must_attr(asg, "name"));
        assert_eq!(cfg.asg_name.as_deref(), Some(asg_name.as_str()), "{env}");
        let hook = s.resource("aws_autoscaling_lifecycle_hook", "terminating");
        assert_eq!(
            cfg.asg_lifecycle_hook.as_deref(),
            Some(m.string(must_attr(hook, "name")).as_str()),
            "{env}: ASG_LIFECYCLE_HOOK"
        );
        let heartbeat = s.num_attr(hook, "heartbeat_timeout") as u64;
        assert!(
            heartbeat >= cfg.drain_timeout.as_secs() + HEARTBEAT_MARGIN_SECS,
            "{env}: hook heartbeat {heartbeat} s must cover DRAIN_TIMEOUT_SECS {} s + {HEARTBEAT_MARGIN_SECS} s",
            cfg.drain_timeout.as_secs()
        );
        let namespace = cfg
            .cloudwatch_namespace
            .clone()
            .expect("CLOUDWATCH_NAMESPACE set");
        let mut service_alarms = 0;
        for alarm in s.module.iter().filter(|b| {
            b.identifier() == "resource" && labels(b)[0] == "aws_cloudwatch_metric_alarm"
        }) {
            if m.string(must_attr(alarm, "namespace")) != namespace {
                continue;
            }
            service_alarms += 1;
            let ctx = format!("{env}: alarm {:?}", labels(alarm));
            let metric = m.string(must_attr(alarm, "metric_name"));
            assert!(
                [
                    cloudwatch::BACKLOG,
                    cloudwatch::IN_FLIGHT,
                    cloudwatch::BACKLOG_AGE
                ]
                .contains(&metric.as_str()),
                "{ctx}: metric {metric} is not one the binary publishes"
            );
            let Expression::Object(dims) = must_attr(alarm, "dimensions") else {
                panic!("{ctx}: dimensions must be an object")
            };
            let dims: Vec<(String, String)> = dims
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        ObjectKey::Identifier(i) => i.as_str().to_string(),
                        ObjectKey::Expression(e) => m.string(e),
                        other => panic!("{ctx}: dimension key {other:?}"),
                    };
                    (key, path_str(v))
                })
                .collect();
            assert_eq!(
                dims,
                [(
                    cloudwatch::DIMENSION.to_string(),
                    "aws_autoscaling_group.this.name".to_string()
                )],
                "{ctx}: the binary publishes exactly the {} dimension",
                cloudwatch::DIMENSION
            );
        }
        assert!(
            service_alarms > 0,
            "{env}: no alarm on the service's namespace"
        );
        assert_eq!(cfg.port, 8080, "{env}: the ELB sends to 8080");
    }
}

#[test]
fn the_termination_lifecycle_hook_is_answered_by_the_service_of_its_own_group() {
    let s = Stack::module_only();
    let hook = s.resource("aws_autoscaling_lifecycle_hook", "terminating");
    assert_eq!(
        s.str_attr(hook, "lifecycle_transition"),
        "autoscaling:EC2_INSTANCE_TERMINATING"
    );
    assert_eq!(s.str_attr(hook, "default_result"), "CONTINUE");
    assert_eq!(
        path_str(must_attr(hook, "autoscaling_group_name")),
        "aws_autoscaling_group.this.name"
    );
    assert_eq!(
        path_str(must_attr(hook, "name")),
        "local.lifecycle_hook_name"
    );
    for st in stacks() {
        let h = st.resource("aws_autoscaling_lifecycle_hook", "terminating");
        let heartbeat = st.num_attr(h, "heartbeat_timeout");
        // DRAIN_TIMEOUT_SECS=540 (cloud-config; the rendered env is checked
        // against the hook above) + the margin.
        assert!(heartbeat >= 600.0, "{}: heartbeat {heartbeat}", st.name());
    }
    // The group's name is known without the group (no dependency cycle with
    // the instance policy): the ASG, the env file and the IAM ARN use it.
    assert_eq!(
        path_str(must_attr(
            s.resource("aws_autoscaling_group", "this"),
            "name"
        )),
        "local.asg_name"
    );
    let doc = s.data("aws_iam_policy_document", "this");
    let complete: Vec<&Block> = sub_blocks(doc, "statement")
        .into_iter()
        .filter(|st| {
            s.strings(must_attr(st, "actions"))
                .iter()
                .any(|a| a.starts_with("autoscaling:") && !a.starts_with("autoscaling:Describe"))
        })
        .collect();
    assert_eq!(complete.len(), 1, "one statement may change the group");
    let st = complete[0];
    assert_eq!(
        s.strings(must_attr(st, "actions")),
        ["autoscaling:CompleteLifecycleAction"]
    );
    let resources = s.strings_raw(must_attr(st, "resources"));
    assert_eq!(
        resources.iter().map(path_str).collect::<Vec<_>>(),
        ["local.asg_arn"],
        "CompleteLifecycleAction only on the group's own ARN"
    );
    let arn = hcl::format::to_string(s.local("asg_arn")).unwrap();
    assert!(
        arn.contains(":autoscaling:")
            && arn
                .trim_end()
                .ends_with(":autoScalingGroupName/${local.asg_name}\""),
        "{arn}"
    );
    for env in ENVIRONMENTS {
        let e = Stack::for_env(env);
        let m = Evaluated::new(&e);
        let arn = m.locals["asg_arn"].as_str().unwrap().to_string();
        let account = e.string(&e.env_vars["aws_account_id"]);
        assert_eq!(
            arn,
            format!("arn:aws:autoscaling:us-east-1:{account}:autoScalingGroup:*:autoScalingGroupName/vf-export-{env}")
        );
    }
    // Metadata tags on (the binary's fallback for the group's name); IMDSv2.
    let md = one_block(
        s.resource("aws_launch_template", "this"),
        "metadata_options",
    );
    assert_eq!(s.str_attr(md, "instance_metadata_tags"), "enabled");
    assert_eq!(s.str_attr(md, "http_tokens"), "required");
}

#[test]
fn the_image_comes_from_an_immutable_scanned_encrypted_repository_with_a_lifecycle_policy() {
    let s = Stack::module_only();
    let repo_block = s.resource("aws_ecr_repository", "this");
    assert_eq!(s.str_attr(repo_block, "image_tag_mutability"), "IMMUTABLE");
    assert_eq!(
        must_attr(
            one_block(repo_block, "image_scanning_configuration"),
            "scan_on_push"
        ),
        &Expression::Bool(true)
    );
    assert_eq!(
        s.str_attr(
            one_block(repo_block, "encryption_configuration"),
            "encryption_type"
        ),
        "KMS"
    );
    assert_eq!(
        must_attr(repo_block, "force_delete"),
        &Expression::Bool(false)
    );
    assert_eq!(path_str(must_attr(repo_block, "name")), "local.name");

    let policy = s.resource("aws_ecr_lifecycle_policy", "this");
    assert_eq!(
        path_str(must_attr(policy, "repository")),
        "aws_ecr_repository.this.name"
    );
    let Expression::FuncCall(json) = must_attr(policy, "policy") else {
        panic!("policy must be jsonencode(...)")
    };
    assert_eq!(json.name.name.as_str(), "jsonencode");
    let rules = hcl::format::to_string(&json.args[0]).unwrap();
    assert!(
        rules.contains("imageCountMoreThan") && rules.contains("var.ecr_keep_images"),
        "the lifecycle policy keeps the newest ecr_keep_images images: {rules}"
    );
    let keep = s.num(&s.var_value("ecr_keep_images"));
    assert!(keep >= 10.0, "ecr_keep_images {keep}: room to roll back");

    // The instances may pull from it; the image reference is built from it.
    let doc = s.data("aws_iam_policy_document", "this");
    let pull = statement_granting(&s, doc, "ecr:BatchGetImage");
    let resources = hcl::format::to_string(must_attr(pull, "resources")).unwrap();
    assert!(
        resources.contains("aws_ecr_repository.this.arn"),
        "{resources}"
    );
    let image = hcl::format::to_string(s.local("vf_export_image")).unwrap();
    assert!(
        image.contains("aws_ecr_repository.this.repository_url"),
        "{image}"
    );
    for env in ENVIRONMENTS {
        let e = Stack::for_env(env);
        let m = Evaluated::new(&e);
        let tag = e.string(&e.var_value("vf_export_image_tag"));
        assert_ne!(tag, "latest", "{env}");
        let image = m.locals["vf_export_image"].as_str().unwrap().to_string();
        let account = e.string(&e.env_vars["aws_account_id"]);
        assert_eq!(
            image,
            format!("{account}.dkr.ecr.us-east-1.amazonaws.com/vf-export-{env}:{tag}")
        );
        let file = env_lines(&written_file(m.user_data(), "/etc/vf-export.env"));
        assert_eq!(
            file["VF_EXPORT_IMAGE"], image,
            "{env}: the units run that image"
        );
    }
}

#[test]
fn rollouts_launch_before_terminate_wait_for_the_elb_and_boot_a_pinned_flatcar() {
    for s in stacks() {
        let asg = s.resource("aws_autoscaling_group", "this");
        let ctx = s.name().to_string();
        let policy = one_block(asg, "instance_maintenance_policy");
        assert_eq!(s.num_attr(policy, "min_healthy_percentage"), 100.0, "{ctx}");
        assert_eq!(s.num_attr(policy, "max_healthy_percentage"), 200.0, "{ctx}");
        let refresh = one_block(asg, "instance_refresh");
        assert_eq!(s.str_attr(refresh, "strategy"), "Rolling", "{ctx}");
        let prefs = one_block(refresh, "preferences");
        assert_eq!(s.num_attr(prefs, "min_healthy_percentage"), 100.0, "{ctx}");
        assert_eq!(s.num_attr(prefs, "max_healthy_percentage"), 200.0, "{ctx}");
        assert_eq!(must_attr(prefs, "auto_rollback"), &Expression::Bool(true));
        assert_eq!(must_attr(prefs, "skip_matching"), &Expression::Bool(true));
        assert!(s.num_attr(prefs, "instance_warmup") > 0.0, "{ctx}");
        assert_eq!(
            path_str(must_attr(asg, "wait_for_elb_capacity")),
            "var.app_instance_min_count"
        );
        assert!(s.num_attr(asg, "wait_for_elb_capacity") >= 1.0, "{ctx}");
        let policies = s.strings(must_attr(asg, "termination_policies"));
        assert_eq!(policies[0], "OldestLaunchTemplate", "{ctx}");
        // The group follows the launch template's newest version, so a new
        // image or AMI starts a refresh.
        let lt = one_block(asg, "launch_template");
        assert_eq!(
            path_str(must_attr(lt, "version")),
            "aws_launch_template.this.latest_version"
        );
    }

    // One exact Flatcar release per environment, never the newest.
    let s = Stack::module_only();
    let ami = s.data("aws_ami", "flatcar");
    assert!(
        attr(ami.body(), "most_recent").is_none_or(|e| e == &Expression::Bool(false)),
        "the Flatcar AMI must not be most_recent"
    );
    let values = ami_name_filter(&s);
    assert!(
        values.contains("${var.flatcar_version}") && !values.contains('*'),
        "the AMI name must pin the version: {values}"
    );
    for env in ENVIRONMENTS {
        let e = Stack::for_env(env);
        let version = e.string(&e.var_value("flatcar_version"));
        let parts: Vec<&str> = version.split('.').collect();
        assert!(
            parts.len() == 3 && parts.iter().all(|p| p.parse::<u32>().is_ok()),
            "{env}: flatcar_version {version} must be an exact release"
        );
    }
}

/// The entries of the cloud-config's `coreos.units` list, as key/value
/// lines (content blocks skipped).
fn coreos_units(yaml: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in yaml.lines() {
        if let Some(name) = line.strip_prefix("    - name: ") {
            current = Some(name.trim().to_string());
            out.entry(name.trim().to_string()).or_default();
        } else if let (Some(name), Some(kv)) = (&current, line.strip_prefix("      ")) {
            if let Some((k, v)) = kv.split_once(": ") {
                if !k.starts_with(' ') {
                    out.get_mut(name)
                        .unwrap()
                        .insert(k.to_string(), v.to_string());
                }
            }
        } else if !line.starts_with("        ") && !line.trim().is_empty() {
            current = None;
        }
    }
    out
}

#[test]
fn flatcar_never_updates_or_reboots_on_its_own() {
    let cc = fs::read_to_string(repo().join("cloud-config/vf-export.yaml")).unwrap();
    let lines: Vec<&str> = cc.lines().collect();
    let update = lines
        .iter()
        .position(|l| *l == "  update:")
        .expect("coreos.update section");
    assert_eq!(lines[update + 1].trim(), "reboot_strategy: \"off\"");
    let units = coreos_units(&cc);
    for unit in ["update-engine.service", "locksmithd.service"] {
        let u = units
            .get(unit)
            .unwrap_or_else(|| panic!("{unit} not in coreos.units"));
        assert_eq!(u.get("mask").map(String::as_str), Some("true"), "{unit}");
        assert_eq!(u.get("command").map(String::as_str), Some("stop"), "{unit}");
    }
}

#[test]
fn units_pull_only_absent_images_and_run_the_predeploy_jobs_first() {
    let mut images_run = 0;
    for (path, _) in host_files()
        .into_iter()
        .filter(|(p, _)| p.extension().is_some_and(|x| x == "service"))
    {
        let unit = unit_directives(&path);
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let all: Vec<&String> = unit.values().flatten().collect();
        assert!(
            !all.iter().any(|v| v.contains("docker pull")),
            "{name}: pulls unconditionally (a registry outage would keep it down)"
        );
        let pre = unit.get("ExecStartPre").cloned().unwrap_or_default();
        for start in unit.get("ExecStart").into_iter().flatten() {
            if !start.contains("docker run") {
                continue;
            }
            images_run += 1;
            assert!(start.contains("--pull never"), "{name}: {start}");
            // The image is the first ${VAR} after the options.
            let image = start
                .split_whitespace()
                .find(|w| w.starts_with("${") && w.ends_with("_IMAGE}"))
                .unwrap_or_else(|| panic!("{name}: no ${{..._IMAGE}} in {start}"));
            assert!(
                pre.iter()
                    .any(|p| p == &format!("/opt/bin/vf-export-host image {image}")),
                "{name}: {image} must be made present (ECR login, pull if absent) before it runs"
            );
        }
    }
    assert!(images_run >= 4, "every container unit checked");

    let campaigns = unit_directives(&repo().join("systemd/campaigns.service"));
    for k in ["Requires", "After"] {
        assert!(
            campaigns[k][0].contains("vf-export-predeploy.service"),
            "campaigns.service {k}"
        );
    }
    assert!(campaigns["ExecStart"][0].contains("--volume /run/vf-export/files:/run/secrets:ro"));
    let pre = unit_directives(&repo().join("systemd/vf-export-predeploy.service"));
    assert_eq!(pre["Type"], ["oneshot"]);
    assert_eq!(pre["RemainAfterExit"], ["yes"]);
    assert_eq!(pre["Before"], ["campaigns.service"]);
    assert_eq!(pre["ExecStart"], ["/opt/bin/vf-export-host predeploy"]);

    // The jobs each environment runs are subcommands of this binary.
    let cli = Cli::command();
    for env in ENVIRONMENTS {
        let m = Evaluated::new(&Stack::for_env(env));
        let file = env_lines(&written_file(m.user_data(), "/etc/vf-export.env"));
        let jobs = &file["VF_EXPORT_PREDEPLOY"];
        assert!(jobs.split(',').any(|j| j == "indexes"), "{env}: {jobs}");
        for job in jobs.split(',') {
            assert!(
                cli.find_subcommand(job).is_some(),
                "{env}: pre-deploy job {job} is not a vf-export subcommand"
            );
        }
        let host = written_file(m.user_data(), "/opt/bin/vf-export-host");
        assert_eq!(
            host.trim_end(),
            fs::read_to_string(repo().join("systemd/bin/vf-export-host"))
                .unwrap()
                .trim_end(),
            "{env}: the helper the units call is installed"
        );
    }
}

#[test]
fn alarms_for_what_prometheus_cannot_see_notify_one_encrypted_topic() {
    for s in stacks() {
        // (resource, namespace, metric, statistic, comparison, threshold,
        //  period, evaluation periods, missing data)
        for (name, ns, metric, stat, op, threshold, period, evaluations, missing) in [
            (
                "elb_unhealthy_hosts",
                "AWS/ELB",
                "UnHealthyHostCount",
                "Maximum",
                "GreaterThanThreshold",
                0.0,
                60.0,
                10.0,
                "notBreaching",
            ),
            (
                "elb_healthy_hosts_below_min",
                "AWS/ELB",
                "HealthyHostCount",
                "Maximum",
                "LessThanThreshold",
                1.0,
                60.0,
                3.0,
                "breaching",
            ),
            (
                "elb_backend_5xx",
                "AWS/ELB",
                "HTTPCode_Backend_5XX",
                "Sum",
                "GreaterThanThreshold",
                10.0,
                300.0,
                1.0,
                "notBreaching",
            ),
            (
                "elb_generated_5xx",
                "AWS/ELB",
                "HTTPCode_ELB_5XX",
                "Sum",
                "GreaterThanThreshold",
                10.0,
                300.0,
                1.0,
                "notBreaching",
            ),
            (
                "asg_in_service_below_min",
                "AWS/AutoScaling",
                "GroupInServiceInstances",
                "Minimum",
                "LessThanThreshold",
                1.0,
                60.0,
                5.0,
                "breaching",
            ),
            (
                "export_backlog_age",
                "VfExport",
                vf_export::telemetry::cloudwatch::BACKLOG_AGE,
                "Maximum",
                "GreaterThanThreshold",
                1800.0,
                60.0,
                5.0,
                "breaching",
            ),
        ] {
            let a = s.resource("aws_cloudwatch_metric_alarm", name);
            for (key, want) in [
                ("namespace", ns),
                ("metric_name", metric),
                ("statistic", stat),
                ("comparison_operator", op),
                ("treat_missing_data", missing),
            ] {
                assert_eq!(s.str_attr(a, key), want, "{}: {name}.{key}", s.name());
            }
            for (key, want) in [
                ("threshold", threshold),
                ("period", period),
                ("evaluation_periods", evaluations),
            ] {
                assert_eq!(s.num_attr(a, key), want, "{}: {name}.{key}", s.name());
            }
            for key in ["alarm_actions", "ok_actions"] {
                let targets: Vec<String> = s
                    .strings_raw(must_attr(a, key))
                    .iter()
                    .map(path_str)
                    .collect();
                assert_eq!(
                    targets,
                    ["aws_sns_topic.alarms.arn"],
                    "{}: {name}.{key}",
                    s.name()
                );
            }
            let dims = hcl::format::to_string(must_attr(a, "dimensions")).unwrap();
            let want = if ns == "AWS/ELB" {
                "LoadBalancerName = aws_elb.this.name"
            } else {
                "AutoScalingGroupName = aws_autoscaling_group.this.name"
            };
            assert!(
                dims.contains(want),
                "{}: {name}.dimensions: {dims}",
                s.name()
            );
        }
        // The two "below the minimum" alarms follow the group's minimum.
        for name in ["elb_healthy_hosts_below_min", "asg_in_service_below_min"] {
            let a = s.resource("aws_cloudwatch_metric_alarm", name);
            assert_eq!(
                path_str(must_attr(a, "threshold")),
                "var.app_instance_min_count"
            );
        }
    }
    // The backlog-age alarm reads the namespace and dimension the binary
    // publishes (ExportBacklogAge under CLOUDWATCH_NAMESPACE, per ASG).
    let s = Stack::module_only();
    let age = s.resource("aws_cloudwatch_metric_alarm", "export_backlog_age");
    assert_eq!(
        path_str(must_attr(age, "namespace")),
        "var.cloudwatch_namespace"
    );
    let dims = hcl::format::to_string(must_attr(age, "dimensions")).unwrap();
    assert!(
        dims.contains(vf_export::telemetry::cloudwatch::DIMENSION),
        "{dims}"
    );

    // One topic, encrypted with a key CloudWatch may use (it cannot publish
    // under the AWS managed aws/sns key), subscriptions from a variable.
    let topic = s.resource("aws_sns_topic", "alarms");
    assert_eq!(
        path_str(must_attr(topic, "kms_master_key_id")),
        "aws_kms_key.alarms.arn"
    );
    let key = s.resource("aws_kms_key", "alarms");
    assert!(s.boolean(must_attr(key, "enable_key_rotation")));
    let policy = s.data("aws_iam_policy_document", "alarms_kms");
    let cloudwatch = sub_blocks(policy, "statement")
        .into_iter()
        .find(|st| {
            sub_blocks(st, "principals").iter().any(|p| {
                must_attr(p, "identifiers")
                    == &Expression::Array(vec![string_expr("cloudwatch.amazonaws.com")])
            })
        })
        .expect("a key policy statement for cloudwatch.amazonaws.com");
    assert_eq!(
        s.strings(must_attr(cloudwatch, "actions")),
        ["kms:Decrypt", "kms:GenerateDataKey*"]
    );
    let sub = s.resource("aws_sns_topic_subscription", "alarms");
    let for_each = hcl::format::to_string(must_attr(sub, "for_each")).unwrap();
    assert!(for_each.contains("var.alarm_subscriptions"), "{for_each}");
    assert_eq!(
        path_str(must_attr(sub, "topic_arn")),
        "aws_sns_topic.alarms.arn"
    );
    for env in ENVIRONMENTS {
        let e = Stack::for_env(env);
        assert!(
            e.call.contains_key("alarm_subscriptions"),
            "{env} does not pass alarm_subscriptions"
        );
        assert!(
            !e.call.contains_key("alarm_sns_topic_arn"),
            "{env} still passes the removed alarm_sns_topic_arn"
        );
    }
}
