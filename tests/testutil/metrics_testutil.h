// Reads a server's metrics back the way a scrape reads them.
#ifndef ATTNROLL_TESTS_TESTUTIL_METRICS_TESTUTIL_H_
#define ATTNROLL_TESTS_TESTUTIL_METRICS_TESTUTIL_H_

#include <map>
#include <string>
#include <vector>

#include <prometheus/metric_family.h>

#include "server/runtime/metrics.h"

namespace attnroll::testing {

// The sum of the series of `name` whose labels include `labels` (counters
// and gauges; for histograms, the sample count). 0 when there is none.
inline double MetricValue(const runtime::Metrics& metrics, const std::string& name,
                          const std::map<std::string, std::string>& labels = {}) {
  double sum = 0;
  std::vector<prometheus::MetricFamily> families = metrics.registry()->Collect();
  for (prometheus::MetricFamily& f : metrics.live()->Collect()) families.push_back(std::move(f));
  for (const prometheus::MetricFamily& f : families) {
    if (f.name != name) continue;
    for (const prometheus::ClientMetric& m : f.metric) {
      bool match = true;
      for (const auto& [k, v] : labels) {
        bool found = false;
        for (const auto& l : m.label) found = found || (l.name == k && l.value == v);
        match = match && found;
      }
      if (!match) continue;
      switch (f.type) {
        case prometheus::MetricType::Counter: sum += m.counter.value; break;
        case prometheus::MetricType::Gauge: sum += m.gauge.value; break;
        case prometheus::MetricType::Histogram: sum += static_cast<double>(m.histogram.sample_count); break;
        default: break;
      }
    }
  }
  return sum;
}

}  // namespace attnroll::testing

#endif  // ATTNROLL_TESTS_TESTUTIL_METRICS_TESTUTIL_H_
