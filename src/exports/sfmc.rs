//! SFMC (Salesforce Marketing Cloud) rows, regions and prefixes (spec:
//! exports.md "SFMC rows, regions and prefixes"), shared by
//! `reminderEmail`, `reminderEmailSample` and `autoReminderEmail`.
//!
//! Rows are read region by region so each ZIP folder / object is written
//! once: the distinct locales of the selected scoring documents are mapped
//! to regions, then each region is one index scan
//! `{campaignId, selected: true, locale: {$in: its locales}}`.

use std::borrow::Cow;
use std::collections::HashMap;

use mongodb::bson::{doc, Bson, Document};
use sha2::{Digest, Sha256};

use super::raw::{array_of, doc_of, get, pick, text};
use super::scoring_rows::{scoring_filter, Scored, ScoringReader};
use super::{ExportError, Source};
use crate::error::Code;
use crate::store::iso;
use crate::store::{Campaign, Market, StoreError};

/// The SFMC row header (spec, order exact).
pub const SFMC_COLUMNS: [&str; 12] = [
    "SubscriberKey",
    "EmailAddress",
    "FirstName",
    "Locale",
    "ArtistName",
    "TourName",
    "VenueName",
    "EventDate",
    "CityState",
    "Link",
    "Passcode",
    "ThemeColor",
];

/// Regions in the order they are written (the spec's MID list order).
pub const REGIONS: [&str; 5] = ["NA", "UK", "DE", "AU", "LNE"];

/// Locale → SFMC locale; others unchanged.
pub fn sfmc_locale(locale: &str) -> Cow<'_, str> {
    Cow::Borrowed(mapped_locale(locale).unwrap_or(locale))
}

/// The SFMC locale when the spec maps this one.
fn mapped_locale(locale: &str) -> Option<&'static str> {
    match locale.to_ascii_lowercase().replace('_', "-").as_str() {
        "en-mx" => Some("en-us"),
        "en-uk" | "en-ie" => Some("en-gb"),
        "en-nz" => Some("en-au"),
        _ => None,
    }
}

/// The region of a locale, from the country of the locale itself (before
/// the SFMC locale mapping: `en-mx` is MX, so NA, also on an LNAA
/// campaign); `None` for a country no SFMC business unit serves here.
pub fn region(locale: &str, is_lnaa: bool) -> Option<&'static str> {
    let l = locale.to_ascii_lowercase().replace('_', "-");
    let country = l.rsplit_once('-').map(|(_, c)| c)?;
    Some(match country {
        "us" | "ca" if is_lnaa => "LNE",
        "us" | "ca" | "mx" => "NA",
        "gb" | "uk" | "ie" => "UK",
        "de" => "DE",
        "au" | "nz" => "AU",
        _ => return None,
    })
}

/// The business unit (MID) of a region.
pub fn mid(region: &str) -> &'static str {
    match region {
        "NA" => "7222895",
        "UK" => "1314420",
        "DE" => "1347780",
        "AU" => "1341602",
        "MX" => "523000091",
        "IE" => "1362441",
        "LNE" => "518008883",
        _ => "",
    }
}

/// The SFMC import prefix of a region.
pub fn prefix(region: &str) -> String {
    match region {
        "NA" => "Ticketmaster/7222895/TMDemandMgmt/DM_ArtistPresale_V03".into(),
        "LNE" => "Livenation/518008883/TMDemandMgmt/DM_ArtistPresale_V03".into(),
        r => format!(
            "TMInternational/{}/DM_ArtistPresale/DM_ArtistPresale_V03",
            mid(r)
        ),
    }
}

/// `ArtistName`: the artist, or `"{artist} {fanClubName}"` for a fan-club
/// campaign unless the fan-club name already contains the artist name (then
/// the fan-club name alone, *ours*).
pub fn artist_name(c: &Campaign) -> String {
    let fan_club = c.fan_club_name.trim();
    if fan_club.is_empty() {
        c.artist_name.clone()
    } else if fan_club
        .to_lowercase()
        .contains(&c.artist_name.to_lowercase())
    {
        // "Muse" + "Muse Insiders" would repeat the artist.
        fan_club.to_string()
    } else {
        format!("{} {fan_club}", c.artist_name)
    }
}

/// `SubscriberKey`: hex SHA-256 of the user id (never the id itself).
pub fn subscriber_key(user_id: &str) -> String {
    hex::encode(Sha256::digest(user_id.as_bytes()))
}

/// The scoring record's code for a market: codes ordered by `id`, the first
/// with that `marketId`.
pub fn passcode<'a>(scored: &'a Scored, market_id: &str) -> Option<Cow<'a, str>> {
    let mut best: Option<(Cow<'a, str>, Cow<'a, str>)> = None;
    for c in array_of(get(&scored.scoring, &["codes"])) {
        let Some(c) = doc_of(Some(c)) else { continue };
        let [market, id, code] = pick(Some(c), ["marketId", "id", "code"]);
        if text(market) != market_id {
            continue;
        }
        let (id, code) = (text(id), text(code));
        if best.as_ref().is_none_or(|(b, _)| id_less(&id, b)) {
            best = Some((id, code));
        }
    }
    best.map(|(_, code)| code).filter(|c| !c.is_empty())
}

/// Ids compare as numbers when both are, else as text.
fn id_less(a: &str, b: &str) -> bool {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x < y,
        _ => a < b,
    }
}

/// One region's share of the selected scoring documents: the locale values
/// (as stored) whose documents go to its file.
#[derive(Debug, Clone)]
pub struct RegionPlan {
    pub region: &'static str,
    pub locales: Vec<Bson>,
}

/// Regions present among the campaign's selected scoring documents, each
/// with the locales that go to it, in [`REGIONS`] order. A locale whose
/// country has no region, and a missing locale, go to `default_region`
/// (spec: exports.md, SFMC regions): every selected row lands in a file.
pub async fn plan_regions(
    src: &Source,
    default_region: &'static str,
) -> Result<Vec<RegionPlan>, StoreError> {
    let locales = src
        .store
        .raw("scoring")
        .distinct(
            "locale",
            scoring_filter(&src.campaign.id, doc! { "selected": true }),
        )
        .await?;
    let mut by_region: HashMap<&'static str, Vec<Bson>> = HashMap::new();
    let mut defaulted = Vec::new();
    for l in locales {
        let r = match &l {
            Bson::String(s) => region(s, src.campaign.is_lnaa),
            _ => None,
        };
        match r {
            Some(r) => by_region.entry(r).or_default().push(l),
            None => {
                defaulted.push(l.to_string());
                by_region.entry(default_region).or_default().push(l);
            }
        }
    }
    // Documents without a locale (null or missing: `$in: [null]` matches
    // both) go to the default region too.
    by_region
        .entry(default_region)
        .or_default()
        .push(Bson::Null);
    if !defaulted.is_empty() {
        // A locale is not personal data: naming it tells support why.
        tracing::info!(locales = ?defaulted, region = default_region, "locales without an SFMC region of their own go to the default region");
    }
    Ok(REGIONS
        .iter()
        .filter_map(|r| {
            by_region.remove(r).map(|mut l| {
                l.sort_by_key(|b| b.to_string());
                RegionPlan {
                    region: r,
                    locales: l,
                }
            })
        })
        .collect())
}

/// A reader over one region's selected rows, joined to entries and users.
pub fn region_reader(src: &Source, plan: &RegionPlan, limit: Option<u64>) -> ScoringReader {
    let f: Document = scoring_filter(
        &src.campaign.id,
        doc! { "selected": true, "locale": { "$in": plan.locales.clone() } },
    );
    ScoringReader::open(src, f, limit, true)
}

/// Is this row in its region only because its locale has none of its own
/// (counted in `meta.defaultRegionRows`)?
pub fn defaulted(s: &Scored, is_lnaa: bool) -> bool {
    region(&s.field("locale"), is_lnaa).is_none()
}

/// Builds SFMC rows for one campaign.
pub struct SfmcRows<'s> {
    campaign: &'s Campaign,
    artist: String,
    markets: HashMap<&'s str, &'s Market>,
}

impl<'s> SfmcRows<'s> {
    pub fn new(src: &'s Source) -> Self {
        Self {
            campaign: &src.campaign,
            artist: artist_name(&src.campaign),
            markets: src.markets.iter().map(|m| (m.id.as_str(), m)).collect(),
        }
    }

    /// The 12 cells; no code for the entry's market fails the export
    /// naming the market (never the user).
    #[allow(clippy::result_large_err)] // the error is the rare, final one
    pub fn cells<'a>(&'a self, s: &'a Scored) -> Result<[Cow<'a, str>; 12], ExportError> {
        let market_id = s.market_id();
        let code = passcode(s, &market_id).ok_or_else(|| ExportError::Data {
            message: format!("no code for market {market_id}"),
            payload: Some(Bson::Document(doc! {
                "code": Code::MissingCodeFromMarket.as_str(),
                "marketId": market_id.as_ref(),
            })),
        })?;
        let market = self.markets.get(market_id.as_ref()).copied();
        let p = s.person();
        let m = |f: fn(&'a Market) -> Cow<'a, str>| market.map(f).unwrap_or(Cow::Borrowed(""));
        Ok([
            Cow::Owned(subscriber_key(&s.user_id())),
            p.email(),
            p.first_name(),
            match mapped_locale(&s.field("locale")) {
                Some(m) => Cow::Borrowed(m),
                None => s.field("locale"),
            },
            Cow::Borrowed(self.artist.as_str()),
            Cow::Borrowed(self.campaign.tour_name.as_str()),
            m(|m| Cow::Borrowed(m.venue_name.as_str())),
            m(|m| Cow::Owned(m.event_date.map(iso).unwrap_or_default())),
            m(|m| Cow::Owned(format!("{}, {}", m.city, m.state))),
            m(|m| Cow::Borrowed(m.link.as_str())),
            code,
            Cow::Borrowed(self.campaign.theme_primary.as_str()),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locales_regions_prefixes() {
        assert_eq!(sfmc_locale("en-mx"), "en-us");
        assert_eq!(sfmc_locale("en-UK"), "en-gb");
        assert_eq!(sfmc_locale("en-ie"), "en-gb");
        assert_eq!(sfmc_locale("en-nz"), "en-au");
        assert_eq!(sfmc_locale("fr-ca"), "fr-ca");
        assert_eq!(region("en-us", false), Some("NA"));
        assert_eq!(region("fr_CA", false), Some("NA"));
        assert_eq!(region("es-mx", false), Some("NA"));
        // The country of the entry's own locale, before the SFMC mapping:
        // en-mx is MX (NA), also on an LNAA campaign.
        assert_eq!(region("en-mx", true), Some("NA"));
        assert_eq!(region("en-mx", false), Some("NA"));
        assert_eq!(region("en-us", true), Some("LNE"));
        assert_eq!(region("fr-ca", true), Some("LNE"));
        assert_eq!(region("fr-fr", true), None);
        assert_eq!(region("es-mx", true), Some("NA"));
        assert_eq!(region("en-uk", false), Some("UK"));
        assert_eq!(region("en-ie", false), Some("UK"));
        assert_eq!(region("de-de", false), Some("DE"));
        assert_eq!(region("en-nz", false), Some("AU"));
        assert_eq!(region("fr-fr", false), None);
        assert_eq!(region("en", false), None);
        assert_eq!(
            prefix("NA"),
            "Ticketmaster/7222895/TMDemandMgmt/DM_ArtistPresale_V03"
        );
        assert_eq!(
            prefix("LNE"),
            "Livenation/518008883/TMDemandMgmt/DM_ArtistPresale_V03"
        );
        assert_eq!(
            prefix("UK"),
            "TMInternational/1314420/DM_ArtistPresale/DM_ArtistPresale_V03"
        );
    }

    #[test]
    fn artist_names() {
        let mut c = Campaign {
            artist_name: "Muse".into(),
            ..Default::default()
        };
        assert_eq!(artist_name(&c), "Muse");
        c.fan_club_name = "Fan Club".into();
        assert_eq!(artist_name(&c), "Muse Fan Club");
        c.fan_club_name = "MUSE Insiders".into();
        assert_eq!(artist_name(&c), "MUSE Insiders");
    }
}
