//! Place and road names for generated cities: Ningbo's districts, and pinyin syllables
//! combined into plausible street, community and road names.

use std::collections::BTreeSet;

use rand::Rng;

/// District names of Ningbo, used in order; more districts get generated names.
pub(crate) const DISTRICTS: &[&str] = &[
    "Haishu", "Jiangbei", "Yinzhou", "Zhenhai", "Beilun", "Fenghua", "Cixi", "Yuyao",
];

/// Well-known road names, used for arterials in order.
pub(crate) const ARTERIALS: &[&str] = &[
    "Zhongshan",
    "Jiefang",
    "Tiantong",
    "Baizhang",
    "Siming",
    "Kangzhuang",
    "Yaojiang",
    "Ningchuan",
    "Shounan",
    "Canghai",
    "Huancheng",
    "Jiangnan",
    "Dongqian",
    "Xueshi",
    "Changchun",
    "Renmin",
    "Liyuan",
    "Qianhe",
    "Tongtu",
    "Century",
    "Fenghua",
    "Ningnan",
    "Huaishu",
    "Qixin",
    "Xinhe",
    "Zhongxing",
    "Wangchun",
    "Jiangdong",
    "Luojiang",
    "Hongtang",
];

const SYLLABLES: &[&str] = &[
    "bai", "yun", "gu", "lou", "dong", "sheng", "xi", "men", "nan", "bei", "jiang", "xia", "wang",
    "chun", "duan", "tang", "shi", "qi", "li", "she", "hai", "yue", "hu", "shan", "ming", "feng",
    "he", "lin", "qing", "an", "xin", "hua", "long", "quan", "song", "zhu", "mei", "tao", "yang",
    "cheng", "kang", "ning", "fu", "de", "jin", "yin", "bao", "tian",
];

/// Hands out unique names made of two or three syllables.
pub(crate) struct NameMaker {
    used: BTreeSet<String>,
}

impl NameMaker {
    pub(crate) fn new() -> Self {
        NameMaker {
            used: BTreeSet::new(),
        }
    }

    /// Marks a name as taken.
    pub(crate) fn reserve(&mut self, name: &str) {
        self.used.insert(name.to_string());
    }

    /// A fresh capitalised name such as `Baiyun`.
    pub(crate) fn make(&mut self, rng: &mut impl Rng) -> String {
        for attempt in 0.. {
            let parts = if attempt < 200 { 2 } else { 3 };
            let mut name = String::new();
            for _ in 0..parts {
                name.push_str(SYLLABLES[rng.random_range(0..SYLLABLES.len())]);
            }
            let mut chars = name.chars();
            let name: String = chars
                .next()
                .map(|c| c.to_ascii_uppercase())
                .into_iter()
                .chain(chars)
                .collect();
            if self.used.insert(name.clone()) {
                return name;
            }
        }
        unreachable!("the loop only ends by returning")
    }
}
