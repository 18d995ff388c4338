//! Orders as JSON: generate, serialize, parse back (typed and untyped),
//! total per customer, serialize a summary.
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[cfg(feature = "lineprof")]
#[global_allocator]
static A: lineprof::Tracking = lineprof::Tracking::new();

#[derive(Serialize, Deserialize, Clone)]
struct Item {
    sku: String,
    quantity: u32,
    price_cents: u64,
    tags: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone)]
struct Order {
    id: u64,
    customer: String,
    email: String,
    note: Option<String>,
    items: Vec<Item>,
}

fn generate(n: usize) -> Vec<Order> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (0..n as u64)
        .map(|id| {
            let c = next() % 5000;
            let items = (0..1 + next() % 6)
                .map(|_| Item {
                    sku: format!("SKU-{:08X}", next() % 100_000),
                    quantity: (next() % 20) as u32 + 1,
                    price_cents: next() % 100_000,
                    tags: (0..next() % 4).map(|t| format!("tag{}", (t + next()) % 50)).collect(),
                })
                .collect();
            Order {
                id,
                customer: format!("Customer \"{c}\" Ltd."),
                email: format!("buyer{c}@example{}.com", c % 17),
                note: (next() % 3 == 0).then(|| "leave at the door \u{e9}\u{1F600}".repeat(3)),
                items,
            }
        })
        .collect()
}

fn total_untyped(v: &Value) -> HashMap<String, u64> {
    let mut totals = HashMap::new();
    for order in v.as_array().unwrap() {
        let customer = order["customer"].as_str().unwrap().to_string();
        let sum: u64 = order["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["quantity"].as_u64().unwrap() * i["price_cents"].as_u64().unwrap())
            .sum();
        *totals.entry(customer).or_insert(0) += sum;
    }
    totals
}

fn main() {
    let n: usize = std::env::args().nth(1).map_or(60_000, |a| a.parse().unwrap());
    let orders = generate(n);
    let text = serde_json::to_string(&orders).unwrap();
    let typed: Vec<Order> = serde_json::from_str(&text).unwrap();
    let untyped: Value = serde_json::from_str(&text).unwrap();
    let totals = total_untyped(&untyped);
    let mut ranking: Vec<(&String, &u64)> = totals.iter().collect();
    ranking.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let pretty = serde_json::to_string_pretty(&untyped).unwrap();
    let again: Value = serde_json::from_str(&pretty).unwrap();
    let items: usize = typed.iter().map(|o| o.items.len()).sum();
    println!(
        "{} orders, {} items, {} bytes, {} pretty, top {} {}, same {}",
        typed.len(),
        items,
        text.len(),
        pretty.len(),
        ranking[0].0,
        ranking[0].1,
        again == untyped
    );
}
