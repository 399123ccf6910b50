//! The driver-independent end-to-end suite (docs/ARCHITECTURE.md "Testing"): one macro listing every
//! case of [`crate::cases`] once, so each driver's `tests/e2e.rs` is a single line.

/// Expands to one `#[test]` per case of [`crate::cases`] (in one module per topic), each
/// running the case against the given `mta-sts-daemon` and `mta-sts-query` binaries:
///
/// ```text
/// mta_sts_tests::e2e_suite!(
///     env!("CARGO_BIN_EXE_mta-sts-daemon"),
///     env!("CARGO_BIN_EXE_mta-sts-query")
/// );
/// ```
#[macro_export]
macro_rules! e2e_suite {
    ($daemon:expr, $query:expr $(,)?) => {
        /// The programs under test.
        const BINS: $crate::cases::Bins = $crate::cases::Bins {
            daemon: $daemon,
            query: $query,
        };
        $crate::e2e_suite! {
            @topics
            policy: [
                enforce_several_mx_and_wildcard,
                testing_without_strict_testing,
                testing_with_strict_testing,
                mode_none,
                lf_and_crlf_policies,
                unknown_keys_ignored,
                max_age_over_cap_still_served,
                missing_max_age,
                enforce_without_mx,
                bad_mode,
                bad_policy_version,
                ip_literal_mx_invalid,
            ],
            txt: [
                no_txt_nxdomain,
                txt_without_sts_record,
                two_sts_records,
                bad_version,
                missing_id,
                bad_id_characters,
                extension_fields_accepted,
                cname_txt_followed,
                unrelated_txt_beside_sts,
                txt_split_in_several_strings,
                dns_server_down,
                dns_servfail,
                tcp_fallback_on_truncation,
                long_txt_record,
            ],
            fetch: [
                policy_request_shape,
                status_404,
                redirect_not_followed,
                text_html_rejected,
                text_plain_with_charset_accepted,
                oversized_by_content_length,
                oversized_chunked,
                chunked_small_accepted,
                hanging_policy_host_times_out,
                reset_by_policy_host,
                status_500,
            ],
            tls: [
                wrong_name_certificate,
                untrusted_certificate,
                expired_certificate,
                valid_certificate,
            ],
            admin: [
                metrics_endpoint_counts,
                cache_admin_through_the_daemon,
                cache_admin_on_the_store,
                sighup_reloads_and_reopens_the_log,
                check_config_reports_every_problem,
                cache_refused_over_tcp,
                foreign_host_refused_over_tcp,
                metrics_on_tcp_and_administration_on_the_socket,
                stalled_client_does_not_block_metrics,
                import_of_a_full_export_through_the_socket,
            ],
            limits: [
                idle_connection_closed,
                stalled_partial_request_closed,
                client_not_reading_replies_closed,
                pipelining_client_that_never_reads_holds_a_bounded_output,
                pipelining_client_that_reads_late_gets_every_reply,
                pipelined_misses_beyond_the_per_connection_bound,
                max_connections_bounds_open_connections,
                stop_answers_requests_already_sent,
                overload_answers_temp,
                flood_under_a_low_descriptor_limit,
            ],
            request_path: [
                staggered_burst_internal,
                staggered_burst_sqlite,
                staggered_burst_redis,
            ],
            cache: [
                after_cache_grace_smoke,
                concurrent_requests_one_fetch,
            ],
            keys: [
                port_case_and_trailing_dot_keys,
                leading_dot_and_ip_literals_no_dns,
                invalid_names_no_dns,
                idn_key_uses_a_label,
            ],
            protocol: [
                zones_answer_differently,
                tlsrpt_output_exact,
                unix_socket_with_mode,
                pipelined_replies_in_order,
                pipelined_requests_beyond_one_read_all_answered,
                malformed_netstrings_perm_then_close,
                oversized_request_perm_then_close,
                oversized_request_in_one_write_gets_perm,
                request_without_space_perm,
                queued_replies_before_perm,
                connection_reused_for_many_requests,
                client_disconnect_mid_request,
                sigterm_exits_zero,
                sigterm_finishes_in_flight_requests,
                config_error_exits_nonzero,
                empty_config_starts,
                missing_config_file_starts,
                disable_uvloop_accepted,
                pidfile_written,
                logfile_receives_lookups,
                log_lines_cannot_be_forged,
            ],
            postfix: [
                postmap_over_tcp,
                postmap_over_unix_socket,
            ],
            dane: [
                all_hosts_usable,
                mixed_hosts,
                only_unusable_records,
                secure_mx_without_tlsa,
                insecure_mx_with_tlsa,
                insecure_host_address,
                tlsa_servfail_is_temp,
                implicit_mx,
                null_mx,
                dane_wins_over_mta_sts_only_in_dane_zones,
                zone_without_dane_unchanged,
                burst_is_one_query_set,
                queries_ask_with_do_and_no_ad_means_no_dane,
                cname_host,
                query_shows_dane,
                warns_about_a_remote_resolver,
            ],
            dnssec: [
                validating_then_sighup_rechecks,
                silent_resolver_warns_after_ready,
                only_with_dane,
                test_name_must_fail_validation,
                check_config_runs_the_check,
                query_dane_says_whether_validating,
            ],
            query: [
                query_valid,
                query_json,
                query_known_id_not_changed,
                query_no_txt,
                query_fetch_error,
                query_bad_args,
                query_hanging_host_times_out,
            ],
            persist: [
                sqlite_survives_restart,
                redis_survives_restart,
                two_daemons_share_redis,
                redis_killed_and_restarted,
                redis_down_at_start,
                sqlite_file_unusable,
                sqlite_locked_at_run_time,
                python_layout_cache_read,
                sqlite_row_ahead_of_the_clock,
                proactive_refresh_picks_up_change_internal,
                proactive_refresh_picks_up_change_sqlite,
                proactive_refresh_picks_up_change_redis,
                proactive_ts_persisted_sqlite,
                proactive_ts_persisted_redis,
                config_examples_start,
            ],
            shared: [
                postgres_survives_restart,
                postgres_down_frozen_and_back,
                sentinel_failover_during_lookups,
            ],
            python: [
                redis_ours_then_python,
                redis_python_then_ours,
                sentinel_ours_then_python,
                sentinel_python_then_ours,
                postgres_ours_then_python,
                postgres_python_then_ours,
            ],
            secrets: [
                redis_password_not_logged,
                check_config_shows_no_secret,
            ],
            logs: [
                json_lines_from_the_command_line,
                json_lines_from_the_config,
            ],
            ops: [
                sd_notify_ready_and_stopping,
                drops_privileges_to_user,
                unknown_user_is_an_error,
                sigint_stops_cleanly,
            ],
            root: [
                pidfile_symlink_refused,
                logfile_symlink_refused,
                reopened_log_symlink_not_followed,
                socket_path_symlink_not_followed,
                unix_sockets_belong_to_the_service_user,
                numeric_user_gets_its_primary_group,
                root_without_user_warned,
                logrotate_signals_only_the_daemon,
            ],
        }
    };
    (@topics $($topic:ident: [$($case:ident),* $(,)?]),* $(,)?) => {
        $(
            mod $topic {
                $(
                    #[test]
                    fn $case() {
                        $crate::cases::$topic::$case(&super::BINS);
                    }
                )*
            }
        )*
    };
}
