#include "tests/metrics/prometheus_text.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace tvq::testing {
namespace {

bool IsNameChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == ':';
}

// Parses `{a="x",b="y"}` starting at text[*pos] == '{'.
absl::Status ParseLabels(absl::string_view text, size_t* pos,
                         MetricLabels* labels) {
  ++*pos;  // '{'
  while (true) {
    while (*pos < text.size() && (text[*pos] == ' ' || text[*pos] == ',')) {
      ++*pos;
    }
    if (*pos >= text.size()) return absl::DataLossError("unterminated labels");
    if (text[*pos] == '}') {
      ++*pos;
      return absl::OkStatus();
    }
    const size_t name_start = *pos;
    while (*pos < text.size() && IsNameChar(text[*pos])) ++*pos;
    const std::string name(text.substr(name_start, *pos - name_start));
    if (name.empty() || *pos + 1 >= text.size() || text[*pos] != '=' ||
        text[*pos + 1] != '"') {
      return absl::DataLossError("bad label");
    }
    *pos += 2;
    std::string value;
    while (true) {
      if (*pos >= text.size()) {
        return absl::DataLossError("unterminated label value");
      }
      const char c = text[(*pos)++];
      if (c == '"') break;
      if (c == '\\') {
        if (*pos >= text.size()) return absl::DataLossError("bad escape");
        const char escaped = text[(*pos)++];
        value += escaped == 'n' ? '\n' : escaped;
      } else {
        value += c;
      }
    }
    if (!labels->emplace(name, std::move(value)).second) {
      return absl::DataLossError(absl::StrCat("label ", name, " repeated"));
    }
  }
}

absl::StatusOr<double> ParseValue(absl::string_view text) {
  const std::string value = absl::AsciiStrToLower(text);
  if (value == "nan") return std::nan("");
  if (value == "+inf" || value == "inf") return HUGE_VAL;
  if (value == "-inf") return -HUGE_VAL;
  double parsed = 0;
  if (!absl::SimpleAtod(value, &parsed)) {
    return absl::DataLossError(absl::StrCat("bad value \"", text, "\""));
  }
  return parsed;
}

}  // namespace

absl::StatusOr<Scrape> Scrape::Parse(std::string_view text_in) {
  const absl::string_view text(text_in.data(), text_in.size());
  Scrape scrape;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line.front() == '#') continue;
    MetricSample sample;
    size_t pos = 0;
    while (pos < line.size() && IsNameChar(line[pos])) ++pos;
    sample.name = std::string(line.substr(0, pos));
    absl::Status status = sample.name.empty()
                              ? absl::DataLossError("no metric name")
                              : absl::OkStatus();
    if (status.ok() && pos < line.size() && line[pos] == '{') {
      status = ParseLabels(line, &pos, &sample.labels);
    }
    if (status.ok()) {
      const std::vector<absl::string_view> rest =
          absl::StrSplit(line.substr(pos), ' ', absl::SkipWhitespace());
      if (rest.empty() || rest.size() > 2) {
        status = absl::DataLossError("expected a value and maybe a timestamp");
      } else {
        absl::StatusOr<double> value = ParseValue(rest[0]);
        if (value.ok()) {
          sample.value = *value;
        } else {
          status = value.status();
        }
      }
    }
    if (!status.ok()) {
      return absl::DataLossError(absl::StrFormat(
          "line %d \"%s\": %s", line_number, line, status.message()));
    }
    scrape.samples_.push_back(std::move(sample));
  }
  return scrape;
}

std::optional<double> Scrape::Find(std::string_view name,
                                   const MetricLabels& labels) const {
  std::optional<double> sum;
  for (const MetricSample& sample : samples_) {
    if (sample.name != name) continue;
    const bool matches =
        std::all_of(labels.begin(), labels.end(), [&](const auto& label) {
          const auto found = sample.labels.find(label.first);
          return found != sample.labels.end() && found->second == label.second;
        });
    if (matches) sum = sum.value_or(0) + sample.value;
  }
  return sum;
}

double Scrape::Value(std::string_view name, const MetricLabels& labels) const {
  return Find(name, labels).value_or(std::nan(""));
}

double Scrape::Sum(std::string_view name) const {
  double sum = 0;
  for (const MetricSample& sample : samples_) {
    if (sample.name == name) sum += sample.value;
  }
  return sum;
}

bool Scrape::Has(std::string_view name) const {
  for (const MetricSample& sample : samples_) {
    if (sample.name == name) return true;
  }
  return false;
}

std::vector<std::string> Scrape::Names() const {
  std::set<std::string> names;
  for (const MetricSample& sample : samples_) names.insert(sample.name);
  return {names.begin(), names.end()};
}

absl::StatusOr<HttpResponse> HttpGet(const std::string& host, int port,
                                     const std::string& target,
                                     absl::Duration timeout) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &address.sin_addr) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("HttpGet: \"", host, "\" is not an IPv4 address"));
  }
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError(std::strerror(errno));
  timeval limit{};
  limit.tv_sec = static_cast<time_t>(absl::ToInt64Seconds(timeout));
  limit.tv_usec = 0;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof(limit));
  const std::string where = absl::StrCat("http://", host, ":", port, target);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&address),
              sizeof(address)) != 0) {
    const std::string reason = std::strerror(errno);
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("GET ", where, ": connect: ", reason));
  }
  const std::string request =
      absl::StrCat("GET ", target, " HTTP/1.0\r\nHost: ", host, ":", port,
                   "\r\nAccept: */*\r\nConnection: close\r\n\r\n");
  size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n =
        send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) {
      const std::string reason = std::strerror(errno);
      close(fd);
      return absl::UnavailableError(
          absl::StrCat("GET ", where, ": send: ", reason));
    }
    sent += static_cast<size_t>(n);
  }
  std::string raw;
  char buffer[16384];
  while (true) {
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n == 0) break;
    if (n < 0) {
      const std::string reason = std::strerror(errno);
      close(fd);
      return absl::UnavailableError(
          absl::StrCat("GET ", where, ": recv: ", reason));
    }
    raw.append(buffer, static_cast<size_t>(n));
  }
  close(fd);

  const size_t header_end = raw.find("\r\n\r\n");
  if (header_end == std::string::npos) {
    return absl::DataLossError(
        absl::StrCat("GET ", where, ": no end of headers in the response"));
  }
  HttpResponse response;
  const std::vector<absl::string_view> header_lines =
      absl::StrSplit(absl::string_view(raw).substr(0, header_end), "\r\n");
  const std::vector<absl::string_view> status_line =
      absl::StrSplit(header_lines[0], ' ');
  if (status_line.size() < 2 ||
      !absl::SimpleAtoi(status_line[1], &response.status)) {
    return absl::DataLossError(
        absl::StrCat("GET ", where, ": status line \"", header_lines[0], "\""));
  }
  for (size_t i = 1; i < header_lines.size(); ++i) {
    const size_t colon = header_lines[i].find(':');
    if (colon == absl::string_view::npos) continue;
    response.headers[absl::AsciiStrToLower(header_lines[i].substr(0, colon))] =
        std::string(
            absl::StripAsciiWhitespace(header_lines[i].substr(colon + 1)));
  }
  std::string body = raw.substr(header_end + 4);
  if (response.headers["transfer-encoding"] == "chunked") {
    std::string decoded;
    size_t pos = 0;
    while (true) {
      const size_t line_end = body.find("\r\n", pos);
      if (line_end == std::string::npos) break;
      const size_t size =
          std::strtoul(body.substr(pos, line_end - pos).c_str(), nullptr, 16);
      if (size == 0) break;
      decoded += body.substr(line_end + 2, size);
      pos = line_end + 2 + size + 2;
    }
    body = std::move(decoded);
  }
  response.body = std::move(body);
  return response;
}

absl::StatusOr<HttpResponse> HttpGetUrl(const std::string& url,
                                        absl::Duration timeout) {
  absl::string_view rest(url);
  if (!absl::ConsumePrefix(&rest, "http://")) {
    return absl::InvalidArgumentError(absl::StrCat("not an http URL: ", url));
  }
  const size_t slash = rest.find('/');
  const absl::string_view authority = rest.substr(0, slash);
  const std::string target =
      slash == absl::string_view::npos ? "/" : std::string(rest.substr(slash));
  const size_t colon = authority.rfind(':');
  int port = 0;
  if (colon == absl::string_view::npos ||
      !absl::SimpleAtoi(authority.substr(colon + 1), &port)) {
    return absl::InvalidArgumentError(absl::StrCat("no port in URL: ", url));
  }
  return HttpGet(std::string(authority.substr(0, colon)), port, target,
                 timeout);
}

absl::StatusOr<int> FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError(std::strerror(errno));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) !=
          0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    const std::string reason = std::strerror(errno);
    close(fd);
    return absl::InternalError(absl::StrCat("binding port 0: ", reason));
  }
  close(fd);
  return static_cast<int>(ntohs(address.sin_port));
}

}  // namespace tvq::testing
